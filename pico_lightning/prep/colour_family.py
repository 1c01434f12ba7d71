"""A task family with hundreds of members, for the task-diversity ablation at CPU scale: colour transforms.

    pico prep colour-family --out DIR [--tasks 256] [--held-out 32] [--pairs-per-task 12] [--size 32] [--seed 0]

Member ``k`` is one colour transform drawn once from a generator seeded by (seed, k): a rotation of every pixel's
chroma about the grey axis by an angle in [0, 360) degrees, a saturation gain in [0.6, 1.6] and a brightness
offset in [-0.15, 0.15]::

    B' = clip(g + gain * R(angle) (B - g) + offset),   g = the pixel's grey level (its mean over R, G, B)

No two members are the same, and a member can only be told from another by its exemplar: the prompt is the
family's one label. The first ``--tasks`` members are held in (split train, and val for the ``held_in`` suite),
the next ``--held-out`` are held out (split test: no run trains on them). A run that trains on ``data.num_tasks``
of the held-in members leaves the others as unseen held-in tasks. Inputs are random crops of scikit-image's
colour photos, drawn per pair, so every member sees the same distribution of pictures.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator

import numpy as np

from pico_lightning.data.schema import CATEGORY_PROMPTS, SampleMeta
from pico_lightning.prep.photos import colour_photo
from pico_lightning.prep.shards import Sample, shard_maxcount, write_shards
from pico_lightning.prep.splits import split_for

CATEGORY = "manipulation"
SOURCE = "colour-family"


def member_name(k: int) -> str:
    return f"colour_{k:04d}"


def member_transform(seed: int, k: int) -> tuple[float, float, float]:
    """(angle in degrees, saturation gain, brightness offset) of member ``k``, seeded by (seed, k) alone."""
    rng = np.random.default_rng([seed, zlib.crc32(b"colour-family"), k])
    return float(rng.uniform(0, 360)), float(rng.uniform(0.6, 1.6)), float(rng.uniform(-0.15, 0.15))


def apply_transform(image: np.ndarray, angle: float, gain: float, offset: float) -> np.ndarray:
    """The member's transform of an (H, W, 3) uint8 image, as (H, W, 3) uint8."""
    x = image.astype(np.float64) / 255.0
    grey = x.mean(axis=-1, keepdims=True)
    axis = np.ones(3) / np.sqrt(3.0)
    theta = np.deg2rad(angle)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * cross @ cross  # Rodrigues, about grey
    y = grey + gain * (x - grey) @ rotation.T + offset
    return (np.clip(y, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def generate_members(seed: int, tasks: int, held_out: int, pairs_per_task: int, size: int) -> Iterator[Sample]:
    """Every member's pairs, two at a time round-robin over members, so any shard mixes many members."""
    members = range(tasks + held_out)
    rngs = [np.random.default_rng([seed, zlib.crc32(b"colour-family-pictures"), k]) for k in members]
    transforms = [member_transform(seed, k) for k in members]
    for start in range(0, pairs_per_task, 2):
        for k in members:
            for position in range(start, min(start + 2, pairs_per_task)):
                image = colour_photo(rngs[k], size)
                meta = SampleMeta(
                    task=member_name(k),
                    category=CATEGORY,
                    variant="default",
                    pair_id=f"{position:04d}",
                    source=SOURCE,
                    split=split_for(position, pairs_per_task, k >= tasks),
                    prompt=CATEGORY_PROMPTS[CATEGORY],
                )
                yield image, apply_transform(image, *transforms[k]), meta


def build_colour_family(
    out_dir: str | os.PathLike,
    tasks: int = 256,
    held_out: int = 32,
    pairs_per_task: int = 12,
    size: int = 32,
    seed: int = 0,
) -> list[str]:
    """Write the family as VisRel shards + index.json in ``out_dir``; returns the shard names."""
    if tasks < 1 or held_out < 0 or pairs_per_task < 4 or size < 16:
        raise ValueError("colour family: expected tasks >= 1, held_out >= 0, pairs_per_task >= 4, size >= 16")
    total = (tasks + held_out) * pairs_per_task
    samples = generate_members(seed, tasks, held_out, pairs_per_task, size)
    names = [member_name(k) for k in range(tasks, tasks + held_out)]
    return write_shards(samples, out_dir, maxcount=shard_maxcount(total), held_out=names)
