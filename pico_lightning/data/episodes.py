"""Episodes: task-grouped pools of (input, output) pairs -> (A, A', B, B') grids.

An episode is ``k = rows*cols/2`` different pairs of one task and variant, laid out in reading order with the
ground-truth B' in the target (last) cell: k = 2 for the classic 2x2 layout, (A, A') over (B, B'). This module
also picks the task subsets of ablations (``data.tasks``, ``data.num_tasks``, ``data.shots_per_task``) and the
prompt of an episode. Pure: no Lightning, no file I/O; every random choice comes from an explicit Generator.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pico_lightning.data.batch import TrainBatch
from pico_lightning.data.schema import CATEGORY_PROMPTS, SampleMeta
from pico_lightning.errors import UserError
from pico_lightning.panels import Layout, compose_grid, target_mask

POLICIES = ("task_balanced", "uniform", "weighted")
PROMPT_MODES = ("none", "category", "task")
Entry = tuple[str, str, str]  # (task, variant, pair_id)


@dataclass(frozen=True, eq=False)
class Pair:
    """One decoded sample: its meta and two pictures (any ``compose_grid`` input; uint8 (3, S, S) here)."""

    meta: SampleMeta
    input: Any
    output: Any


def seeded_rng(*parts: int | str) -> np.random.Generator:
    """A Generator seeded by ints and strings (strings through crc32), e.g. (seed, epoch, rank, worker)."""
    entropy = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) % 2**63 for p in parts]
    return np.random.default_rng(entropy)


@dataclass(frozen=True)
class PairFilter:
    """Which samples to keep: these splits, these tasks (None = all), these pair ids per task (None = all)."""

    splits: frozenset[str]
    tasks: frozenset[str] | None = None
    shots: Mapping[str, frozenset[str]] | None = None

    def __call__(self, meta: SampleMeta) -> bool:
        if meta.split not in self.splits or (self.tasks is not None and meta.task not in self.tasks):
            return False
        return self.shots is None or meta.pair_id in self.shots.get(meta.task, ())


def pairs_per_episode(layout: Layout) -> int:
    """Pairs in one episode: half the panels (the layout must hold whole input|output pairs)."""
    if layout.num_panels % 2:
        raise UserError(
            f"data.rows/data.cols: {layout.rows}x{layout.cols} panels do not form input|output "
            "pairs (rows*cols must be even)"
        )
    return layout.num_panels // 2


def check_task_names(index: dict, names: Iterable[str], key: str) -> None:
    """Raise UserError naming ``key`` when a name is not a task of the index."""
    unknown = sorted(set(names) - set(index["tasks"]))
    if unknown:
        raise UserError(f"{key}: unknown task(s) {unknown}; known tasks: {sorted(index['tasks'])}")


def select_tasks(
    index: dict,
    tasks: Sequence[str] = (),
    exclude_tasks: Sequence[str] = (),
    num_tasks: int = 0,
    seed: int = 0,
    task_fraction: float = 0.0,
) -> list[str]:
    """Held-in tasks to train on: ``tasks`` (or all) minus ``exclude_tasks``, then ``num_tasks`` of them (or
    ``task_fraction`` of them, rounded, at least one).

    The ``num_tasks`` choice is seeded and stratified: round-robin over the families (in a seeded order), a
    seeded order of tasks within each, so the families are as even as the counts allow. Sorted names.
    """
    check_task_names(index, tasks, "data.tasks")
    check_task_names(index, exclude_tasks, "data.exclude_tasks")
    held_out = sorted(t for t in tasks if index["tasks"][t]["held_out"])
    if held_out:
        raise UserError(f"data.tasks: {held_out} are held-out tasks (test only, never trained on)")
    base = list(tasks) or [t for t, info in index["tasks"].items() if not info["held_out"]]
    chosen = sorted(set(base) - set(exclude_tasks))
    if not chosen:
        raise UserError("data.tasks/data.exclude_tasks: no held-in task left to train on")
    if task_fraction:
        num_tasks = max(1, round(task_fraction * len(chosen)))
    if num_tasks == 0:
        return chosen
    if num_tasks > len(chosen):
        raise UserError(f"data.num_tasks: {num_tasks} exceeds the {len(chosen)} held-in tasks available")
    rng = seeded_rng(seed, "num_tasks")
    families: dict[str, list[str]] = defaultdict(list)
    for task in chosen:
        families[index["tasks"][task]["category"]].append(task)
    queues = [list(rng.permutation(families[family])) for family in rng.permutation(sorted(families))]
    picked: list[str] = []
    while len(picked) < num_tasks:
        for queue in queues:
            if queue and len(picked) < num_tasks:
                picked.append(str(queue.pop(0)))
    return sorted(picked)


def select_shots(entries: Iterable[Entry], shots: int, seed: int = 0) -> dict[str, frozenset[str]]:
    """The first ``shots`` pair ids of each task in a seeded order, grouped by variant so episodes still form.

    The pair ids are shuffled (seeded by task), then stably sorted by the first appearance of their variant:
    the kept pairs fill one variant before the next. Returns {task: kept pair ids}.
    """
    by_task: dict[str, dict[str, str]] = defaultdict(dict)
    for task, variant, pair_id in entries:
        by_task[task][pair_id] = variant
    kept = {}
    for task, variants in by_task.items():
        ids = list(seeded_rng(seed, "shots", task).permutation(sorted(variants)))
        first = {}
        for pair_id in ids:
            first.setdefault(variants[pair_id], len(first))
        ids.sort(key=lambda pair_id: first[variants[pair_id]])
        kept[task] = frozenset(str(pair_id) for pair_id in ids[:shots])
    return kept


def formable(entries: Iterable[Entry], k: int) -> bool:
    """Whether some (task, variant) holds at least ``k`` different pair ids (one episode's worth)."""
    counts = Counter((task, variant) for task, variant, _ in set(entries))
    return any(count >= k for count in counts.values())


def episode_prompt(meta: SampleMeta, mode: str) -> str:
    """The prompt of an episode: "" (none), the family label (category) or the sample's own prompt (task)."""
    if mode not in PROMPT_MODES:
        raise ValueError(f"prompt mode {mode!r}: expected one of {PROMPT_MODES}")
    return {"none": "", "category": CATEGORY_PROMPTS[meta.category], "task": meta.prompt}[mode]


def prompt_set(index: dict, mode: str) -> list[str]:
    """Every prompt ``mode`` can produce over the index's tasks, "" (prompt dropout) first, then sorted."""
    if mode == "none":
        return [""]
    if mode == "category":
        prompts = {CATEGORY_PROMPTS[info["category"]] for info in index["tasks"].values()}
    else:
        prompts = {info["prompt"] for info in index["tasks"].values()}
    return [""] + sorted(prompts - {""})


class EpisodePool:
    """Decoded pairs by (task, variant), up to ``capacity`` each; a re-read pair id refreshes its slot."""

    def __init__(self, capacity: int, rng: np.random.Generator):
        self.capacity = capacity
        self.rng = rng
        self.pools: dict[tuple[str, str], list[Pair]] = defaultdict(list)
        self._slots: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)

    def add(self, pair: Pair) -> None:
        """Insert ``pair``; when its pool is full it replaces a random member (reservoir-like refresh)."""
        key = (pair.meta.task, pair.meta.variant)
        pool, slots = self.pools[key], self._slots[key]
        slot = slots.get(pair.meta.pair_id)
        if slot is None and len(pool) < self.capacity:
            slot = len(pool)
            pool.append(pair)
        elif slot is None:  # full: evict a random member
            slot = int(self.rng.integers(len(pool)))
            del slots[pool[slot].meta.pair_id]
        pool[slot] = pair  # also refreshes a re-read pair id in place
        slots[pair.meta.pair_id] = slot


class EpisodeSampler:
    """Draws an episode from pools keyed by (task, variant): a task by policy, a variant, k different pairs.

    task_balanced: every eligible task equally likely; uniform: proportional to its sample count
    (``sample_counts`` when given, else the pooled pairs); weighted: ``task_weights`` (missing tasks weigh 1).
    A (task, variant) with fewer than k pairs is not eligible.
    """

    def __init__(
        self,
        policy: str = "task_balanced",
        task_weights: Mapping[str, float] | None = None,
        rng: np.random.Generator | None = None,
        pairs_per_episode: int = 2,
        sample_counts: Mapping[str, int] | None = None,
    ):
        if policy not in POLICIES:
            raise ValueError(f"sampling policy {policy!r}: expected one of {POLICIES}")
        if any(weight < 0 for weight in (task_weights or {}).values()):
            raise UserError(f"data.task_weights: weights must be >= 0, got {dict(task_weights)}")
        self.policy, self.task_weights = policy, dict(task_weights or {})
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.k, self.sample_counts = pairs_per_episode, sample_counts

    def eligible(self, pools: Mapping[tuple[str, str], Sequence[Pair]]) -> dict[str, list[tuple[str, str]]]:
        """{task: its (task, variant) keys holding at least k pairs}, tasks sorted."""
        keys: dict[str, list[tuple[str, str]]] = {}
        for key in sorted(pools):
            if len(pools[key]) >= self.k:
                keys.setdefault(key[0], []).append(key)
        return keys

    def task_probabilities(self, pools: Mapping[tuple[str, str], Sequence[Pair]]) -> dict[str, float]:
        """Probability of each eligible task under the policy (sums to 1; empty when nothing is eligible)."""
        eligible = self.eligible(pools)
        if self.policy == "task_balanced":
            weights = {task: 1.0 for task in eligible}
        elif self.policy == "weighted":
            weights = {task: float(self.task_weights.get(task, 1.0)) for task in eligible}
        elif self.sample_counts is not None:
            weights = {task: float(self.sample_counts.get(task, 0)) for task in eligible}
        else:
            weights = {task: float(sum(len(pools[key]) for key in keys)) for task, keys in eligible.items()}
        total = sum(weights.values())
        return {task: weight / total for task, weight in weights.items() if weight > 0} if total > 0 else {}

    def draw(self, pools: Mapping[tuple[str, str], Sequence[Pair]]) -> list[Pair]:
        """k different pairs of one task and variant; ValueError when no task is eligible."""
        probabilities = self.task_probabilities(pools)
        if not probabilities:
            raise ValueError(f"no task with {self.k} pairs of one variant (and a weight > 0) to draw from")
        tasks = list(probabilities)
        task = tasks[self.rng.choice(len(tasks), p=np.array(list(probabilities.values())))]
        keys = self.eligible(pools)[task]
        sizes = np.array([len(pools[key]) for key in keys], dtype=np.float64)
        pool = pools[keys[self.rng.choice(len(keys), p=sizes / sizes.sum())]]
        return [pool[i] for i in self.rng.choice(len(pool), size=self.k, replace=False)]


def draw_flags(rng: np.random.Generator | None, augment: bool, prompt_dropout: float) -> tuple[bool, bool]:
    """An episode's random choices after its pairs: (flip the panels, drop the prompt). A resumed stream makes
    these draws alone for the episodes it skips."""
    flip = augment and rng.random() < 0.5
    return flip, prompt_dropout > 0 and rng.random() < prompt_dropout


def make_episode(
    pairs: Sequence[Pair],
    layout: Layout,
    resize_mode: str = "resize",
    prompt_mode: str = "category",
    prompt_dropout: float = 0.0,
    augment: bool = False,
    rng: np.random.Generator | None = None,
) -> dict:
    """Pairs (exemplars then the query) -> {"grid": (3, H, W) in [-1, 1], "mask": (1, H, W), "prompt", "task",
    "category"}; the ground-truth B' sits in the target cell.

    ``augment`` flips every panel horizontally with probability 1/2, the same flip for all of them (so the
    relation A -> A' stays the one of B -> B'); the prompt becomes "" with probability ``prompt_dropout``.
    """
    if (augment or prompt_dropout > 0) and rng is None:
        raise ValueError("make_episode: augment or prompt_dropout needs an rng")
    flip, drop_prompt = draw_flags(rng, augment, prompt_dropout)
    grid = compose_grid([p for pair in pairs for p in (pair.input, pair.output)], layout, resize_mode)
    if flip:
        for rows, cols in map(layout.cell, range(layout.num_panels)):
            grid[:, rows, cols] = grid[:, rows, cols].flip(-1)
    query = pairs[-1].meta
    prompt = episode_prompt(query, prompt_mode)
    if drop_prompt:
        prompt = ""
    return {"grid": grid, "mask": target_mask(layout), "prompt": prompt, "task": query.task, "category": query.category}


def _pair_order(pair: Pair) -> tuple[str, str, str]:
    return pair.meta.task, pair.meta.variant, pair.meta.pair_id


def fixed_episodes(
    samples: Iterable[Pair],
    limit: int,
    seed: int,
    layout: Layout,
    resize_mode: str = "resize",
    prompt_mode: str = "category",
    group_of: Callable[[str], str] | None = None,
) -> list[dict]:
    """Deterministic evaluation episodes (tasks sorted), no augmentation or dropout: per task, as many as a
    round-robin over its group's tasks needs to reach ``limit`` episodes, ceil(limit / tasks in the group). Tasks are
    grouped by ``group_of(task)`` (one group by default), e.g. held_in's seen and unseen tasks. Only what is used
    is composed: a grid at FLUX scale is 12.5 MB, and ``limit`` per task over a few hundred tasks would not fit.

    The choice depends only on (seed, task) and the set of pairs, not on their reading order, and a task's first
    episodes are the same whatever ``limit``. Each episode also carries "pair_ids" (the pairs in reading order).
    Tasks that cannot form an episode are left out.
    """
    k = pairs_per_episode(layout)
    by_task: dict[str, dict[tuple[str, str], list[Pair]]] = {}
    for pair in sorted(samples, key=_pair_order):
        key = (pair.meta.task, pair.meta.variant)
        by_task.setdefault(key[0], {}).setdefault(key, []).append(pair)
    samplers = {
        task: EpisodeSampler("uniform", rng=seeded_rng(seed, "eval", task), pairs_per_episode=k) for task in by_task
    }
    eligible = [task for task in sorted(by_task) if samplers[task].eligible(by_task[task])]
    group = group_of or (lambda task: "")
    tasks_in = Counter(group(task) for task in eligible)
    episodes = []
    for task in eligible:
        for _ in range(-(-limit // tasks_in[group(task)])):
            pairs = samplers[task].draw(by_task[task])
            episode = make_episode(pairs, layout, resize_mode, prompt_mode)
            episodes.append({**episode, "pair_ids": tuple(pair.meta.pair_id for pair in pairs)})
    return episodes


def collate_episodes(episodes: Sequence[dict]) -> TrainBatch:
    """Episodes -> a :class:`TrainBatch`: "grid" (B, 3, H, W) and "mask" (B, 1, H, W) float32, "prompt", "task"
    and "category" lists."""
    return TrainBatch(
        grid=torch.stack([episode["grid"] for episode in episodes]),
        mask=torch.stack([episode["mask"] for episode in episodes]),
        prompt=[episode["prompt"] for episode in episodes],
        task=[episode["task"] for episode in episodes],
        category=[episode["category"] for episode in episodes],
    )
