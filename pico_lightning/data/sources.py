"""Where the training data is: resolve data.shards / data.root to shard urls, learn each shard's samples, and
select tasks and shots. A shard's samples come from index.json when it lists the shard at its current byte
size; any other shard (no index: a brace pattern, URLs, pipes) is scanned once, its json members only.
A shard with no readable sample, an unreadable index, or a selection that cannot form a single episode is a
UserError at setup, before any worker starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tarfile
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds
from tqdm import tqdm
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext

from pico_lightning.config import DataConfig
from pico_lightning.data import episodes as ep
from pico_lightning.data.schema import INDEX_FORMAT, INDEX_NAME, SampleMeta
from pico_lightning.errors import UserError

log = logging.getLogger(__name__)
MEMBERS = ("input.png", "output.png", "json")


def _is_local(url: str) -> bool:
    return re.match(r"[A-Za-z][\w+.-]*:", url) is None  # no scheme (pipe:, http://, file:, ...)


def read_index(path: Path) -> dict:
    """An index.json; UserError naming the file when it is unreadable or not a VisRel index."""
    fix = "rebuild the data with `pico prep`, or delete the file to scan the shards instead"
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: unreadable index ({type(err).__name__}: {err}); {fix}") from err
    if not (isinstance(index, dict) and isinstance(index.get("tasks"), dict) and isinstance(index.get("shards"), list)):
        raise UserError(f"{path}: not a VisRel index (no 'tasks' and 'shards'); {fix}")
    return index


def resolve_shards(cfg: DataConfig) -> tuple[list[str], Path | None]:
    """Shard urls and the index.json path (None when there is none) from data.shards, else data.root."""
    key, spec = ("data.shards", cfg.shards) if cfg.shards else ("data.root", cfg.root)
    if not spec:
        raise UserError(
            "data.shards/data.root: set one (a directory with index.json, a brace pattern, URLs or pipe: commands)"
        )
    if os.path.isdir(spec):
        index = Path(spec) / INDEX_NAME
        names = read_index(index)["shards"] if index.is_file() else sorted(p.name for p in Path(spec).glob("*.tar"))
        urls = [str(Path(spec) / name) for name in names]
    elif key == "data.root":
        raise UserError(f"data.root: {spec} is not a directory")
    else:
        urls = expand_urls(spec)
        index = Path(urls[0]).parent / INDEX_NAME if urls and _is_local(urls[0]) else None
    missing = [url for url in urls if _is_local(url) and not os.path.isfile(url)]
    if not urls or missing:
        raise UserError(f"{key}: {spec}: shard file(s) not found: {missing or 'no .tar shards'}")
    return urls, index if index is not None and index.is_file() else None


def find_index(cfg: DataConfig) -> Path | None:
    """The index.json beside the training shards (data.shards, else data.root), as :func:`resolve_shards` finds
    it; None when there is none (URLs, pipes, shards without one, no data set). Reads nothing."""
    spec = cfg.shards or cfg.root
    if spec and os.path.isdir(spec):
        index = Path(spec) / INDEX_NAME
    elif cfg.shards and (urls := expand_urls(cfg.shards)) and _is_local(urls[0]):
        index = Path(urls[0]).parent / INDEX_NAME
    else:
        return None
    return index if index.is_file() else None


def indexed_metas(index: dict, path: Path) -> dict[str, list[SampleMeta]]:
    """{shard path: its samples' metas} for the shards the index lists at their current byte size (a shard
    rewritten or truncated since is left out, so it gets scanned). Indexes without a sample list give {}."""
    names, sizes, listed = index["shards"], index.get("shard_bytes"), index.get("shard_samples")
    if not (isinstance(sizes, list) and isinstance(listed, list) and len(names) == len(sizes) == len(listed)):
        return {}
    metas = {}
    try:
        for name, size, samples in zip(names, sizes, listed, strict=True):
            url = os.path.normpath(path.parent / name)
            if os.path.isfile(url) and os.path.getsize(url) == size:
                metas[url] = [_indexed_meta(index["tasks"], *sample) for sample in samples]
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: malformed shard_samples ({err}); rebuild the data with `pico prep`") from err
    return metas


def _indexed_meta(tasks: dict, task: str, variant: str, pair_id: str, split: str, source: str) -> SampleMeta:
    info = tasks[task]
    return SampleMeta(task, info["category"], variant, pair_id, source, split, info["prompt"])


def _show_progress() -> bool:
    """A progress bar for a person at a terminal, from one process only (every rank scans)."""
    first = all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK"))
    return first and sys.stderr.isatty()


def scan_shard(url: str) -> list[SampleMeta]:
    """Metas of a shard's samples whose json parses and whose two PNGs are present (PNGs are not read)."""
    members: dict[str, dict] = {}
    stream = None if _is_local(url) else wds.gopen(url)
    try:
        with tarfile.open(url, "r:*") if stream is None else tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                base, ext = base_plus_ext(info.name)
                if info.isfile() and ext in MEMBERS:
                    members.setdefault(base, {})[ext] = tar.extractfile(info).read() if ext == "json" else b""
    except (tarfile.TarError, OSError, EOFError):
        pass  # a truncated or unreadable shard keeps the samples read so far
    finally:
        if stream is not None:
            with suppress(OSError):
                stream.close()
    metas = []
    for parts in members.values():
        with suppress(ValueError, TypeError):
            if all(key in parts for key in MEMBERS):
                metas.append(SampleMeta.from_json(json.loads(parts["json"])))
    return metas


def index_from_metas(metas: Iterable[SampleMeta]) -> dict:
    """A minimal index.json (tasks only) for shards without one; a task with only test pairs is held out."""
    tasks: dict[str, dict] = {}
    for meta in metas:
        info = tasks.setdefault(
            meta.task, {"category": meta.category, "variants": [], "prompt": meta.prompt, "counts": Counter()}
        )
        info["variants"] += [] if meta.variant in info["variants"] else [meta.variant]
        info["counts"][meta.split] += 1
    for info in tasks.values():
        info["held_out"] = set(info["counts"]) == {"test"}
        info["counts"] = dict(info["counts"])
    return {"format": INDEX_FORMAT, "tasks": tasks}


@dataclass
class ShardSet:
    """The resolved data: shard urls, the index, and per shard its metas and its kept train entries."""

    urls: list[str]
    index: dict
    metas: dict[str, list[SampleMeta]]
    entries: dict[str, list[ep.Entry]]
    keep: ep.PairFilter


def load_shard_set(cfg: DataConfig, pairs: int) -> ShardSet:
    """Resolve and scan the shards, then select tasks and shots; UserError when nothing can train."""
    urls, index_path = resolve_shards(cfg)
    index = read_index(index_path) if index_path else None
    known = indexed_metas(index, index_path) if index else {}
    metas = {url: known.get(os.path.normpath(url)) if _is_local(url) else None for url in urls}
    unknown = [url for url, found in metas.items() if found is None]
    for url in tqdm(unknown, desc="scanning shards", unit="shard", disable=len(unknown) < 2 or not _show_progress()):
        metas[url] = scan_shard(url)
    empty = [url for url, found in metas.items() if not found]
    if empty:
        key = "data.shards" if cfg.shards else "data.root"
        raise UserError(f"{key}: shard(s) without a readable sample: {empty}")
    every = [meta for found in metas.values() for meta in found]
    index = index or index_from_metas(every)
    tasks = ep.select_tasks(index, cfg.tasks, cfg.exclude_tasks, cfg.num_tasks, cfg.seed, cfg.task_fraction)
    ep.check_task_names(index, cfg.task_weights, "data.task_weights")
    keep = ep.PairFilter(frozenset({"train"}), frozenset(tasks))
    if cfg.shots_per_task:
        train = [(meta.task, meta.variant, meta.pair_id) for meta in every if keep(meta)]
        keep = ep.PairFilter(keep.splits, keep.tasks, ep.select_shots(train, cfg.shots_per_task, cfg.seed))
    entries = {url: [(m.task, m.variant, m.pair_id) for m in found if keep(m)] for url, found in metas.items()}
    kept = {entry for found in entries.values() for entry in found}
    lonely = [task for task in tasks if not ep.formable((e for e in kept if e[0] == task), pairs)]
    if len(lonely) == len(tasks):
        raise UserError(
            f"data.tasks/data.num_tasks/data.shots_per_task: no selected task {tasks} has "
            f"{pairs} train pairs of one variant"
        )
    if lonely:
        log.warning("data: tasks %s lack %d train pairs of one variant and are never drawn", lonely, pairs)
    return ShardSet(urls, index, metas, entries, keep)
