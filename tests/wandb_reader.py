"""Read what an offline W&B run wrote: the records of its ``run-<id>.wandb`` files, decoded.

wandb 0.31 has no Python reader of its run files (the writer is the Go service). A ``.wandb`` file is a
LevelDB-style log: a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte header (crc32: 4 bytes,
length: 2 bytes little-endian, type: 1 byte; 1 full, 2 first, 3 middle, 4 last) and its payload; a record is one
chunk or a first..last chain, and is a serialized ``wandb_internal_pb2.Record``. Block tails too short for a chunk
header are zero padding.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
FILE_HEADER = 7
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list:
    """Every ``Record`` in one ``.wandb`` file, in the order written; a torn tail (a killed writer) is dropped."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    records, parts, pos = [], [], FILE_HEADER
    while pos + CHUNK_HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER:  # padding at a block's end
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if kind == 0 or pos + CHUNK_HEADER + length > len(data):
            break
        payload = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        parts = [payload] if kind in (FULL, FIRST) else [*parts, payload]
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
    return records


def _value(item):
    """One history or summary item's value as a Python object."""
    kind = item.WhichOneof("value") if item.DESCRIPTOR.oneofs_by_name.get("value") else None
    if kind in ("integer", "number", "boolean", "text"):
        return getattr(item, kind)
    if kind == "none":
        return None
    raw = item.json if kind == "json" else item.value_json
    return json.loads(raw) if raw else None


def _items(items) -> dict:
    """History or summary items as a dict; a nested key (``["eval/gallery", "_type"]``: a table's fields) nests."""
    out: dict = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _value(item)
    return out


@dataclass
class OfflineRun:
    """What the offline runs of one run directory logged, all files together (a resumed run writes one per start)."""

    runs: list = field(default_factory=list)  # RunRecord per file (id, project, entity, job_type, ...)
    rows: list[dict] = field(default_factory=list)  # history rows as dicts, in order
    summary: dict = field(default_factory=dict)  # the last summary value of each key
    artifacts: list = field(default_factory=list)  # ArtifactRecord
    exit_codes: list[int] = field(default_factory=list)  # per file that was finished: 0, or 1 for a failed run


def read_run_file(path: str | Path) -> OfflineRun:
    """Decode one ``run-<id>.wandb`` file."""
    out = OfflineRun()
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.runs.append(record.run)
        elif kind == "history":
            out.rows.append(_items(record.history.item))
        elif kind == "summary":
            out.summary.update(_items(record.summary.update))
        elif kind == "artifact":
            out.artifacts.append(record.artifact)
        elif kind == "exit":
            out.exit_codes.append(record.exit.exit_code)
    return out


def read_offline_runs(directory: str | Path) -> list[OfflineRun]:
    """One :class:`OfflineRun` per ``<directory>/wandb/offline-run-*/run-*.wandb``, in name order: start time to the
    second, then the run's random id (runs started in one second come in any order)."""
    return [read_run_file(path) for path in sorted(Path(directory).glob("wandb/offline-run-*/run-*.wandb"))]


def read_run_dir(run_dir: str | Path) -> OfflineRun:
    """Every offline run file of ``run_dir`` (a resumed run writes one per start) read as one run."""
    out = OfflineRun()
    for part in read_offline_runs(run_dir):
        out.runs += part.runs
        out.rows += part.rows
        out.summary.update(part.summary)
        out.artifacts += part.artifacts
        out.exit_codes += part.exit_codes
    return out
