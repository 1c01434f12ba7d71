"""Build VisRel-lite, the offline VisRel-like demo set: 27 tasks x N pairs from scikit-image's bundled
pictures and procedural scenes, written as WebDataset shards + ``index.json`` (format: ``data/schema.py``).

    pico prep visrel-lite --out DIR [--seed S] [--samples-per-task N]
    write_visrel_lite(Path("DIR"), seed=0)                     # the same from Python (the demo's call)

Pairs are written in blocks of at least two of one (task, variant, split), round-robin over tasks: every shard
mixes many tasks and holds whole blocks, so any reader of a single shard can still form episodes. Each task
draws from its own
generator seeded by (seed, task name): the same seed gives byte-identical PNGs, and adding a task changes no
other task's pairs.
"""

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pico_lightning.data.schema import CATEGORY_PROMPTS, INDEX_NAME, SampleMeta
from pico_lightning.prep.outdir import build_replacing
from pico_lightning.prep.registry import TASKS, TaskSpec
from pico_lightning.prep.shard_plan import cut_blocks
from pico_lightning.prep.shards import Sample, shard_maxcount, write_shards
from pico_lightning.prep.splits import split_for, variant_for
from pico_lightning.prep.suites import build_suites, write_suites


def write_visrel_lite(
    out: Path,
    seed: int = 0,
    samples_per_task: int = 12,
    size: int = 128,
    suite_episodes: int = 32,
    progress: bool = False,
) -> dict:
    """VisRel-lite and its evaluation suites in ``out``, built beside it and put in its place once complete; returns
    the index (see :func:`build_visrel_lite`)."""

    def build(tmp: Path) -> dict:
        suites = write_suites(tmp, build_suites(seed=seed, episodes_per_suite=suite_episodes, size=size))
        return build_visrel_lite(tmp, seed, samples_per_task, size, progress=progress, suites=suites)

    return build_replacing(out, build)


def build_visrel_lite(
    out_dir: str | os.PathLike,
    seed: int = 0,
    samples_per_task: int = 12,
    size: int = 128,
    progress: bool = True,
    suites: dict | None = None,
) -> dict:
    """Write VisRel-lite (square RGB pairs, ``size`` px) to ``out_dir``; return its index plus ``out_dir``.

    ``suites``: the summary of the suites written beside it (``prep/suites.py``), kept in the index."""
    if samples_per_task < 1:
        raise ValueError(f"samples_per_task must be >= 1, got {samples_per_task}")
    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    total = len(TASKS) * samples_per_task
    samples = tqdm(
        generate_samples(seed, samples_per_task, size),
        total=total,
        desc="visrel-lite",
        unit="pair",
        disable=not progress,
    )
    held_out = [task.name for task in TASKS if task.held_out]
    write_shards(samples, out_dir, maxcount=shard_maxcount(total), held_out=held_out, suites=suites)
    return {"out_dir": str(out_dir), **json.loads((Path(out_dir) / INDEX_NAME).read_text())}


def pair_blocks(task: TaskSpec, count: int) -> list[list[int]]:
    """The task's pair positions, grouped by (variant, split) and cut into blocks of 2 (3 for an odd rest)."""
    keys = [
        (variant_for(i, count, task.variants, task.held_out), split_for(i, count, task.held_out)) for i in range(count)
    ]
    return cut_blocks(keys)


def generate_samples(seed: int, samples_per_task: int, size: int) -> Iterator[Sample]:
    """Yield (input, output, meta) block by block, round-robin over tasks; each task's pairs in position order."""
    rngs = [np.random.default_rng([seed, zlib.crc32(task.name.encode())]) for task in TASKS]
    plans = [pair_blocks(task, samples_per_task) for task in TASKS]
    for block in range(max(len(plan) for plan in plans)):
        for task, rng, plan in zip(TASKS, rngs, plans, strict=True):
            for position in plan[block] if block < len(plan) else ():
                yield make_sample(task, rng, position, samples_per_task, size)


def make_sample(task: TaskSpec, rng: np.random.Generator, position: int, count: int, size: int) -> Sample:
    """Draw the task's ``position``-th of ``count`` pairs; images (size, size, 3) uint8."""
    variant = variant_for(position, count, task.variants, task.held_out)
    image_in, image_out = task.fn(rng, variant, task.source(rng, size))
    meta = SampleMeta(
        task=task.name,
        category=task.category,
        variant=variant,
        pair_id=f"{position:04d}",
        source=f"visrel-lite/{task.source.__name__}",
        split=split_for(position, count, task.held_out),
        prompt=CATEGORY_PROMPTS[task.category],
    )
    return image_in, image_out, meta
