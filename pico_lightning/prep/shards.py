"""Atomic WebDataset shard writer for VisRel samples, plus the ``index.json`` that describes the set.

Shards are written under temporary names (``.tmp-visrel-000000.tar``) and renamed to ``visrel-000000.tar``
only once every shard is complete; ``index.json`` is written last (temporary file + ``os.replace``). A crash
mid-way therefore leaves no final-named shard half-written and no index describing missing shards.
"""

import json
import os
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from itertools import chain, islice, repeat
from pathlib import Path

import numpy as np
import webdataset as wds

from pico_lightning.data.schema import INDEX_FORMAT, INDEX_NAME, SPLITS, SampleMeta, encode_png, make_key
from pico_lightning.files import write_json

Sample = tuple[np.ndarray, np.ndarray, SampleMeta]


def shard_maxcount(num_samples: int, num_shards: int = 8, cap: int = 1000) -> int:
    """Samples per shard to spread ``num_samples`` over ~``num_shards`` shards (>= ranks x workers)."""
    return max(1, min(cap, -(-num_samples // num_shards)))


def write_shards(
    samples: Iterable[Sample],
    out_dir: str | os.PathLike,
    maxcount: int = 64,
    prefix: str = "visrel",
    held_out: Collection[str] = (),
    suites: dict | None = None,
    sizes: Sequence[int] | None = None,
) -> list[str]:
    """Write (input, output, meta) samples as ``prefix-%06d.tar`` shards + ``index.json``; return shard names.

    Images are (H, W, 3) uint8; ``maxcount`` is samples per shard, unless ``sizes`` gives each shard's count
    (the caller's own layout: it must account for every sample); ``held_out`` names the unseen-task tasks (all
    their samples must be split ``test``); ``suites`` is stored in the index as-is when given.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _remove(out.glob(f".tmp-{prefix}-*.tar"))  # leftovers of an earlier crashed run
    tmp_paths: list[str] = []
    try:
        counts = repeat(maxcount) if sizes is None else sizes
        metas, listed = _write_tmp_shards(samples, str(out / f".tmp-{prefix}-%06d.tar"), counts, tmp_paths)
        index = build_index(metas, held_out, suites)
    except BaseException:
        _remove(tmp_paths)
        raise
    names = [f"{prefix}-{i:06d}.tar" for i in range(len(tmp_paths))]
    index.update(
        shards=names,
        shard_sizes=[len(listed[tmp]) for tmp in tmp_paths],
        shard_bytes=[os.path.getsize(tmp) for tmp in tmp_paths],
        shard_samples=[listed[tmp] for tmp in tmp_paths],
    )
    for tmp, name in zip(tmp_paths, names, strict=True):
        os.replace(tmp, out / name)
    write_json(out / INDEX_NAME, index)
    _remove(path for path in out.glob(f"{prefix}-*.tar") if path.name not in names)  # stale: from a bigger run
    return names


def _write_tmp_shards(samples: Iterable[Sample], pattern: str, counts: Iterable[int], tmp_paths: list[str]):
    """Stream samples into temporary shards of ``counts`` samples each, appending their paths; return (metas,
    {path: its samples as [task, variant, pair_id, split, source]})."""
    metas, listed, keys = [], defaultdict(list), set()
    stream = iter(samples)
    for number, count in enumerate(counts):
        first = next(stream, None)
        if first is None:
            break
        tmp_paths.append(pattern % number)
        # mtime=0 makes the tar bytes reproducible for a given sample stream.
        with wds.TarWriter(tmp_paths[-1], mtime=0) as sink:
            for image_in, image_out, meta in chain([first], islice(stream, count - 1)):
                key = make_key(meta.task, meta.variant, meta.pair_id)
                if key in keys:
                    raise ValueError(f"write_shards: duplicate sample key {key!r}: pair_id must be unique per task")
                keys.add(key)
                sink.write(
                    {
                        "__key__": key,
                        "input.png": encode_png(image_in),
                        "output.png": encode_png(image_out),
                        "json": json.dumps(meta.to_json(), sort_keys=True).encode(),
                    }
                )
                metas.append(meta)
                listed[tmp_paths[-1]].append([meta.task, meta.variant, meta.pair_id, meta.split, meta.source])
    if not metas:
        raise ValueError("write_shards: no samples to write")
    if next(stream, None) is not None:
        raise ValueError("write_shards: more samples than the shard sizes hold")
    return metas, listed


def build_index(metas: Iterable[SampleMeta], held_out: Collection[str] = (), suites: dict | None = None) -> dict:
    """Summarise sample metas into the ``index.json`` dict (without the shard list)."""
    tasks: dict[str, dict] = {}
    for meta in metas:
        task = tasks.setdefault(meta.task, _new_task_entry(meta, held_out))
        if (task["category"], task["prompt"]) != (meta.category, meta.prompt):
            raise ValueError(f"build_index: task {meta.task!r} has mixed categories or prompts")
        if task["held_out"] and meta.split != "test":
            raise ValueError(f"build_index: held-out task {meta.task!r} has a {meta.split!r} sample")
        if meta.variant not in task["variants"]:
            task["variants"].append(meta.variant)
        task["counts"][meta.split] += 1
    unknown = sorted(set(held_out) - set(tasks))
    if unknown:
        raise ValueError(f"build_index: held-out tasks {unknown} have no samples")
    categories: dict[str, dict] = {}
    for task in tasks.values():
        entry = categories.setdefault(task["category"], {"num_tasks": 0, "num_samples": 0})
        entry["num_tasks"] += 1
        entry["num_samples"] += sum(task["counts"].values())
    splits = {split: sum(task["counts"][split] for task in tasks.values()) for split in SPLITS}
    index = {"format": INDEX_FORMAT, "tasks": tasks, "categories": categories, "splits": splits}
    index["num_samples"] = sum(splits.values())
    if suites is not None:
        index["suites"] = suites
    return index


def _new_task_entry(meta: SampleMeta, held_out: Collection[str]) -> dict:
    counts = {split: 0 for split in SPLITS}
    return {
        "category": meta.category,
        "variants": [],
        "held_out": meta.task in held_out,
        "prompt": meta.prompt,
        "counts": counts,
    }


def _remove(paths: Iterable[str | os.PathLike]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)
