"""VisRel-lite: four families, three held-out tasks per family, formable episodes, deterministic per seed."""

import io
import json
import tarfile
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from pico_lightning.data.schema import CATEGORIES, CATEGORY_PROMPTS, SampleMeta
from pico_lightning.prep.registry import TASKS
from pico_lightning.prep.splits import num_val, split_for, variant_for
from pico_lightning.prep.visrel_lite import build_visrel_lite


def _read_all(out_dir):
    """{key: {member extension: bytes}} over every shard in out_dir."""
    members = defaultdict(dict)
    for shard in sorted(out_dir.glob("visrel-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                members[key][ext] = tar.extractfile(member).read()
    return members


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    out = tmp_path_factory.mktemp("visrel_lite")
    return build_visrel_lite(out, seed=0, samples_per_task=4, size=32, progress=False), out


def test_registry_covers_four_families_with_three_held_out_each():
    names = [task.name for task in TASKS]
    assert len(names) == len(set(names)) >= 24
    assert Counter(task.category for task in TASKS if task.held_out) == {category: 3 for category in CATEGORIES}
    assert all(len(task.variants) <= 3 for task in TASKS)  # 12 pairs keep >= 2 train pairs per variant


def test_splits_keep_val_episodes_within_one_variant():
    assert [num_val(n) for n in (3, 4, 12, 24)] == [0, 2, 2, 4]
    variants = ("a", "b", "c")
    for count in (4, 12):
        assigned = [(variant_for(i, count, variants, False), split_for(i, count, False)) for i in range(count)]
        assert [variant for variant, split in assigned if split == "val"] == ["c", "c"]
    assert Counter(variant_for(i, 12, variants, False) for i in range(10)) == {"a": 4, "b": 3, "c": 3}
    assert Counter(variant_for(i, 12, variants, True) for i in range(12)) == {"a": 4, "b": 4, "c": 4}
    assert {split_for(i, 12, held_out=True) for i in range(12)} == {"test"}


@pytest.mark.parametrize("count", range(2, 13))
def test_every_variant_of_every_split_gets_an_episode_worth_of_pairs(count):
    for task in TASKS:
        groups = Counter(
            (variant_for(i, count, task.variants, task.held_out), split_for(i, count, task.held_out))
            for i in range(count)
        )
        assert min(groups.values()) >= 2, (task.name, count, groups)  # `--samples-per-task 2` trains


def test_build_writes_every_task_family_and_split(lite):
    summary, out = lite
    assert len(summary["tasks"]) >= 24 and set(summary["categories"]) == set(CATEGORIES)
    assert summary["num_samples"] == 4 * len(TASKS) and len(summary["shards"]) >= 4
    held_out = Counter(info["category"] for info in summary["tasks"].values() if info["held_out"])
    assert held_out == {category: 3 for category in CATEGORIES}
    for name, info in summary["tasks"].items():
        expected = {"train": 0, "val": 0, "test": 4} if info["held_out"] else {"train": 2, "val": 2, "test": 0}
        assert info["counts"] == expected, name
        assert info["prompt"] == CATEGORY_PROMPTS[info["category"]]

    members = _read_all(out)
    assert len(members) == summary["num_samples"]
    val_variants = defaultdict(set)
    for key, files in members.items():
        meta = SampleMeta.from_json(json.loads(files["json"]))
        assert key.startswith(f"{meta.task}/{meta.variant}/")
        for ext in ("input.png", "output.png"):
            image = Image.open(io.BytesIO(files[ext]))
            assert (image.mode, image.size) == ("RGB", (32, 32)), (key, ext)
        if meta.split == "val":
            val_variants[meta.task].add(meta.variant)
    assert all(len(variants) == 1 for variants in val_variants.values())  # val pairs form an episode


def test_same_seed_gives_identical_pngs_other_seed_differs(lite, tmp_path):
    summary, out = lite
    again = build_visrel_lite(tmp_path / "again", seed=0, samples_per_task=4, size=32, progress=False)
    assert again["shards"] == summary["shards"]
    first, second = _read_all(out), _read_all(tmp_path / "again")
    assert first == second
    build_visrel_lite(tmp_path / "other", seed=1, samples_per_task=4, size=32, progress=False)
    other = _read_all(tmp_path / "other")
    assert sum(first[key]["input.png"] != other[key]["input.png"] for key in first) > len(first) // 2


def test_outputs_are_not_trivial_copies(lite):
    _, out = lite
    identical = Counter()
    for files in _read_all(out).values():
        meta = json.loads(files["json"])
        pair = [np.asarray(Image.open(io.BytesIO(files[ext]))) for ext in ("input.png", "output.png")]
        identical[meta["task"]] += np.array_equal(*pair)
    assert sum(identical.values()) <= 2, identical  # e.g. a flat crop whose flip equals itself
