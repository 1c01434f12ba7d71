"""The colour-transform family of the CPU task-diversity ablation: members differ, held-out ones are test-only."""

from __future__ import annotations

import json

import numpy as np

from pico_lightning.prep.colour_family import apply_transform, build_colour_family, member_transform


def test_members_are_distinct_seeded_transforms():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    outputs = [apply_transform(image, *member_transform(0, k)) for k in range(20)]
    assert all(not np.array_equal(a, b) for i, a in enumerate(outputs) for b in outputs[i + 1 :])
    assert member_transform(0, 7) == member_transform(0, 7) != member_transform(1, 7)
    grey = np.full((4, 4, 3), 128, dtype=np.uint8)  # no chroma: only the offset moves a grey pixel
    assert np.ptp(apply_transform(grey, *member_transform(0, 3)).astype(int), axis=-1).max() == 0


def test_family_shards_hold_in_and_hold_out_members(tmp_path):
    build_colour_family(tmp_path, tasks=6, held_out=2, pairs_per_task=6, size=16, seed=0)
    index = json.loads((tmp_path / "index.json").read_text())
    held = {task for task, info in index["tasks"].items() if info["held_out"]}
    assert held == {"colour_0006", "colour_0007"} and len(index["tasks"]) == 8
    assert index["tasks"]["colour_0000"]["counts"] == {"train": 4, "val": 2, "test": 0}
    assert index["tasks"]["colour_0007"]["counts"] == {"train": 0, "val": 0, "test": 6}
    first_shard = {entry[0] for entry in index["shard_samples"][0]}
    assert len(first_shard) > 1  # shards mix members
