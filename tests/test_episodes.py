"""Episodes: task subsets, shots, pools, sampling policies, episode grids and fixed evaluation episodes."""

from collections import Counter

import numpy as np
import pytest
import torch

from pico_lightning.data.episodes import (
    EpisodePool,
    EpisodeSampler,
    Pair,
    collate_episodes,
    fixed_episodes,
    make_episode,
    prompt_set,
    seeded_rng,
    select_shots,
    select_tasks,
)
from pico_lightning.data.schema import CATEGORY_PROMPTS, SampleMeta
from pico_lightning.errors import UserError
from pico_lightning.panels import Layout, split_grid

FAMILIES = {"restoration": 3, "estimation": 3, "perception": 2, "manipulation": 4}


def _index() -> dict:
    """12 held-in tasks over the four families (3, 3, 2, 4) plus one held-out task per family."""
    tasks = {}
    for family, count in FAMILIES.items():
        for i in range(count + 1):
            tasks[f"{family}_{i}"] = {
                "category": family,
                "held_out": i == count,
                "prompt": f"do {family} {i}",
            }
    return {"tasks": tasks}


def _pair(task: str, pair_id: str, variant: str = "v", category: str = "restoration", seed: int = 0) -> Pair:
    """A pair with distinct random 8x8 pictures, uint8 (3, 8, 8)."""
    rng = np.random.default_rng([seed, int(pair_id)])
    pictures = [torch.from_numpy(rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)) for _ in range(2)]
    meta = SampleMeta(task, category, variant, pair_id, "test", "train", f"do {task}")
    return Pair(meta, *pictures)


def _pools(counts: dict[str, int]) -> dict:
    """One pool per task (variant "v") holding ``counts[task]`` pairs."""
    return {(task, "v"): [_pair(task, str(i)) for i in range(n)] for task, n in counts.items()}


def test_select_tasks_defaults_to_held_in_and_names_bad_keys():
    index = _index()
    held_in = sorted(t for t, info in index["tasks"].items() if not info["held_out"])
    assert select_tasks(index) == held_in
    assert select_tasks(index, ["estimation_0", "perception_1"], ["perception_1"]) == ["estimation_0"]
    with pytest.raises(UserError, match="data.tasks: unknown task"):
        select_tasks(index, ["nope"])
    with pytest.raises(UserError, match="data.exclude_tasks: unknown task"):
        select_tasks(index, exclude_tasks=["nope"])
    with pytest.raises(UserError, match="data.tasks: .*held-out"):
        select_tasks(index, ["perception_2"])
    with pytest.raises(UserError, match="data.num_tasks: 13 exceeds the 12"):
        select_tasks(index, num_tasks=13)
    with pytest.raises(UserError, match="no held-in task left"):
        select_tasks(index, ["estimation_0"], ["estimation_0"])


@pytest.mark.parametrize("num_tasks", [1, 4, 6, 9, 12])
def test_num_tasks_is_seeded_and_stratified_over_families(num_tasks):
    index = _index()
    chosen = select_tasks(index, num_tasks=num_tasks, seed=3)
    assert chosen == select_tasks(index, num_tasks=num_tasks, seed=3) and len(chosen) == num_tasks
    per_family = Counter(index["tasks"][t]["category"] for t in chosen)
    for f, g in ((f, g) for f in FAMILIES for g in FAMILIES):  # as even as possible: a family lags by 2+
        assert per_family[f] >= per_family[g] - 1 or per_family[f] == FAMILIES[f]  # only once exhausted
    assert all(not index["tasks"][t]["held_out"] for t in chosen)
    choices = {tuple(select_tasks(index, num_tasks=4, seed=s)) for s in range(10)}
    assert len(choices) > 1  # the seed matters
    assert all(len({index["tasks"][t]["category"] for t in c}) == 4 for c in choices)  # one per family


def test_select_shots_keeps_n_per_task_seeded_and_within_a_variant():
    entries = [("a", "v1" if i % 2 else "v2", f"{i:02d}") for i in range(10)] + [
        ("b", "v", "00"),
        ("b", "v", "01"),
    ]
    kept = select_shots(entries, 3, seed=0)
    assert kept == select_shots(reversed(entries), 3, seed=0)  # reading order does not matter
    assert len(kept["a"]) == 3 and kept["b"] == {"00", "01"}
    variants = Counter(variant for task, variant, pair_id in entries if task == "a" and pair_id in kept["a"])
    assert max(variants.values()) >= 2  # the first variant fills up first, so an episode forms
    assert len({frozenset(select_shots(entries, 3, seed=s)["a"]) for s in range(8)}) > 1


def test_pool_is_bounded_and_a_reread_pair_refreshes_its_slot():
    pool = EpisodePool(capacity=4, rng=seeded_rng(0))
    for i in range(10):
        pool.add(_pair("a", str(i)))
    pool.add(_pair("a", "0", seed=1))
    pool.add(_pair("a", "0", seed=2))
    ids = [pair.meta.pair_id for pair in pool.pools[("a", "v")]]
    assert len(ids) == 4 and len(set(ids)) == 4


def test_task_balanced_is_uniform_over_tasks_and_uniform_follows_sample_counts():
    counts = {"t2": 2, "t3": 3, "t5": 5, "t8": 8, "t10": 10, "t1": 1}  # t1 cannot form an episode
    pools, draws = _pools(counts), 3000
    eligible = {t: n for t, n in counts.items() if n >= 2}
    for policy, expected in (
        ("task_balanced", {t: 1 / len(eligible) for t in eligible}),
        ("uniform", {t: n / sum(eligible.values()) for t, n in eligible.items()}),
    ):
        sampler = EpisodeSampler(policy, rng=seeded_rng(0, policy))
        assert sampler.task_probabilities(pools) == pytest.approx(expected)
        seen = Counter()
        for _ in range(draws):
            a, b = sampler.draw(pools)
            assert a.meta.task == b.meta.task and a.meta.pair_id != b.meta.pair_id
            seen[a.meta.task] += 1
        chi2 = sum((seen[t] - draws * p) ** 2 / (draws * p) for t, p in expected.items())
        assert chi2 < 20.5, (policy, seen)  # chi-square, 4 degrees of freedom, p = 0.0004
        assert max(abs(seen[t] / draws - p) for t, p in expected.items()) < 0.03


def test_weighted_policy_uses_config_weights_and_missing_tasks_weigh_one():
    sampler = EpisodeSampler("weighted", {"t2": 3.0, "t5": 0.0}, seeded_rng(0))
    probabilities = sampler.task_probabilities(_pools({"t2": 2, "t3": 3, "t5": 5}))
    assert probabilities == pytest.approx({"t2": 0.75, "t3": 0.25})
    with pytest.raises(UserError, match="data.task_weights"):
        EpisodeSampler("weighted", {"t2": -1.0})
    with pytest.raises(ValueError, match="no task"):
        sampler.draw(_pools({"t1": 1}))


def test_uniform_uses_true_sample_counts_when_pools_are_capped():
    sampler = EpisodeSampler("uniform", sample_counts={"big": 300, "small": 100})
    assert sampler.task_probabilities(_pools({"big": 4, "small": 4})) == pytest.approx({"big": 0.75, "small": 0.25})


def test_make_episode_grid_mask_prompt_and_paired_flip():
    layout = Layout(2, 2, 8)
    pairs = [_pair("a", "1", category="perception"), _pair("a", "2", category="perception")]
    episode = make_episode(pairs, layout, prompt_mode="category")
    grid, mask = episode["grid"], episode["mask"]
    assert grid.shape == (3, 16, 16) and grid.dtype == torch.float32 and mask.shape == (1, 16, 16)
    assert grid.min() >= -1 and grid.max() <= 1 and mask.sum() == 64 and mask[0, 8:, 8:].all()
    panels = split_grid(grid, layout)
    expected = pairs[0].input, pairs[0].output, pairs[1].input, pairs[1].output
    for panel, picture in zip(panels, expected, strict=True):
        assert torch.equal(panel, picture.float() / 255 * 2 - 1)  # B' (ground truth) sits in the target cell
    assert (episode["prompt"], episode["task"], episode["category"]) == ("Segment", "a", "perception")
    assert make_episode(pairs, layout, prompt_mode="task")["prompt"] == "do a"
    assert make_episode(pairs, layout, prompt_mode="none")["prompt"] == ""
    rng = seeded_rng(0)
    assert make_episode(pairs, layout, prompt_dropout=1.0, rng=rng)["prompt"] == ""
    flips = [make_episode(pairs, layout, augment=True, rng=rng)["grid"] for _ in range(16)]
    flipped = [g for g in flips if not torch.equal(g, grid)]
    assert 0 < len(flipped) < 16
    for panel, original in zip(split_grid(flipped[0], layout), panels, strict=True):
        assert torch.equal(panel, original.flip(-1))  # the same flip on every panel, columns stay in place
    with pytest.raises(ValueError, match="rng"):
        make_episode(pairs, layout, augment=True)


def test_collate_stacks_tensors_and_lists_strings():
    layout = Layout(2, 2, 8)
    episodes = [make_episode([_pair("a", "1"), _pair("a", str(i + 2))], layout) for i in range(3)]
    batch = collate_episodes(episodes)
    assert batch["grid"].shape == (3, 3, 16, 16) and batch["mask"].shape == (3, 1, 16, 16)
    assert batch["prompt"] == ["Restore"] * 3 and batch["task"] == ["a"] * 3


def test_fixed_episodes_are_deterministic_and_independent_of_reading_order():
    layout = Layout(2, 2, 8)
    pairs = [_pair(t, str(i), variant="v" if i < 3 else "w") for t in ("a", "b") for i in range(5)]
    pairs.append(_pair("c", "0"))  # a task that cannot form an episode is left out
    first = fixed_episodes(pairs, 8, seed=1, layout=layout)  # 8 over two tasks: 4 each
    again = fixed_episodes(list(reversed(pairs)), 8, seed=1, layout=layout)
    assert [e["task"] for e in first] == ["a"] * 4 + ["b"] * 4
    assert [e["pair_ids"] for e in first] == [e["pair_ids"] for e in again]
    assert all(torch.equal(x["grid"], y["grid"]) for x, y in zip(first, again, strict=True))
    assert all(len(set(e["pair_ids"])) == 2 for e in first)
    other = fixed_episodes(pairs, 8, seed=2, layout=layout)
    assert [e["pair_ids"] for e in other] != [e["pair_ids"] for e in first]
    fewer = fixed_episodes(pairs, 4, seed=1, layout=layout)  # only what a round-robin of 4 uses: the first 2 of each
    assert [e["pair_ids"] for e in fewer] == [e["pair_ids"] for e in first[:2] + first[4:6]]
    grouped = fixed_episodes(pairs, 4, seed=1, layout=layout, group_of=lambda task: task)  # a group per task
    assert [e["pair_ids"] for e in grouped] == [e["pair_ids"] for e in first]


def test_prompt_set_lists_every_prompt_once_with_the_empty_prompt_first():
    index = _index()
    assert prompt_set(index, "none") == [""]
    assert prompt_set(index, "category") == [""] + sorted(CATEGORY_PROMPTS.values())
    assert prompt_set(index, "task") == [""] + sorted(info["prompt"] for info in index["tasks"].values())


@pytest.mark.parametrize(("fraction", "count"), [(0.01, 1), (0.25, 3), (0.5, 6), (1.0, 12)])
def test_task_fraction_keeps_that_share_of_the_pool_as_num_tasks_would(fraction, count):
    index = _index()  # 12 held-in tasks
    assert select_tasks(index, task_fraction=fraction, seed=3) == select_tasks(index, num_tasks=count, seed=3)
    assert len(select_tasks(index, ["estimation_0", "perception_1"], task_fraction=0.5)) == 1
