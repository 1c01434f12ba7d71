"""Evaluation items: fixed episodes of every suite, cut ready to run (context grid, mask, ground-truth B').

Named suites (``segmentation``, ``user_tasks``, any ``DATA/suites/<name>.tar``, ``perseg``) come from the suite
files (data/suites.py). ``held_in`` and ``held_out`` come from the VisRel shards' val / test pairs, in three groups,
each scored beside its copy baseline: ``seen`` (the tasks this run trains on: data.tasks / data.num_tasks /
data.exclude_tasks), ``unseen`` (the pool's held-in tasks it leaves out) and ``held_out`` (tasks no run trains on).
Items are
chosen in a fixed order, round-robin over tasks, so a run evaluates the same episodes at every step and every rank
can take its share ``items[rank::world]``. The exemplar-swap control (``eval.exemplar_swap``) repeats the held-in
episodes with the exemplar pair of another task: if a model reads the relation from its exemplar, the true
exemplar must beat a swapped one by a wide margin; if it only learned a prior over the query, the two score alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pico_lightning.config import HELD_IN_GROUPS
from pico_lightning.data.suites import PERSEG, SuiteEpisode, load_named_suite, suite_kind, suite_names
from pico_lightning.errors import UserError
from pico_lightning.panels import Layout, split_grid

SHARD_SUITES = {"held_in": "val", "held_out": "test"}  # suite -> the shards' split its episodes come from
SEEN, UNSEEN = HELD_IN_GROUPS  # held_in's groups: the tasks this run trains on, the pool's other held-in tasks
SWAPPED = "_swapped"  # suite-name suffix of exemplar-swapped items, reported as eval/<suite>/swapped_<metric>

EpisodesFor = Callable[..., list[dict]]  # (split, episodes per group, task -> group) -> DataModule episode dicts
log = logging.getLogger(__name__)


@dataclass
class EvalItem:
    """One episode ready to run: context grid (target cell black), mask, ground-truth target panel."""

    suite: str
    task: str
    kind: str
    prompt: str
    grid: torch.Tensor  # (3, H, W) in [-1, 1]
    mask: torch.Tensor  # (1, H, W)
    target: torch.Tensor  # (3, S, S) in [-1, 1]
    episode: int = 0  # position in its suite: picks its candidate seeds; its exemplar-swapped copy keeps it
    counted: bool = True  # False: a repeat that only evens out the ranks' shares (eval_loader); not in the metrics


@dataclass(frozen=True)
class EvalData:
    """Where a run's evaluation episodes come from."""

    root: str = ""  # the prepared data directory holding suites/ ("" = none)
    episodes_for: EpisodesFor | None = None  # the shards' fixed val / test episodes (None = no shards)
    trained: frozenset[str] = frozenset()  # the tasks this run trains on: held_in's seen group
    perseg_dir: str = ""  # the PerSeg folder of suite perseg


def item_from_episode(suite: str, episode: SuiteEpisode, layout: Layout, mode: str, prompt_mode: str) -> EvalItem:
    grid, mask, target = episode.grid(layout, mode)
    prompt = "" if prompt_mode == "none" else episode.prompt
    return EvalItem(suite, episode.task, episode.kind, prompt, grid, mask, target)


def item_from_batch_episode(suite: str, episode: dict, layout: Layout) -> EvalItem:
    """A DataModule episode dict (grid with the ground-truth target in place) -> an item with the target cut out;
    shard pairs of many tasks are scored as pictures (PSNR / SSIM)."""
    grid = episode["grid"].clone()
    target = split_grid(grid, layout)[-1].clone()
    rows, cols = layout.cell(layout.num_panels - 1)
    grid[:, rows, cols] = -1.0
    return EvalItem(suite, episode["task"], "image", episode["prompt"], grid, episode["mask"], target)


def data_root(shards: str, root: str) -> str:
    """The prepared data directory (where suites/ lives): data.root, or data.shards when it is a directory."""
    return root or (shards if shards and Path(shards).is_dir() else "")


def check_suite_names(suites: list[str], data: EvalData) -> None:
    """One UserError line for the first name in ``eval.suites`` that is no suite of the data, listing those it has."""
    unknown = [suite for suite in suites if suite not in (*SHARD_SUITES, PERSEG, *suite_names(data.root))]
    if unknown:
        has = [*(SHARD_SUITES if data.episodes_for else ()), *suite_names(data.root)]
        raise UserError(
            f"eval.suites: {unknown[0]!r} is not a suite of {data.root or 'the data'}; it has "
            f"{', '.join(dict.fromkeys(has)) or 'none'} (and perseg from eval.perseg_dir)"
        )


def collect_items(
    suites: list[str],
    data: EvalData,
    layout: Layout,
    resize: str,
    prompt_mode: str,
    episodes_per_suite: int,
    exemplar_swap: bool = False,
) -> dict[str, list[EvalItem]]:
    """Episodes of every requested suite, in a fixed order, at most ``episodes_per_suite`` each; ``held_in`` gives
    the groups ``seen`` and ``unseen`` (none when the run trains on every held-in task). With ``exemplar_swap``,
    also the seen items with another held-in task's exemplar (suite ``seen_swapped``).

    A suite that yields no episode is an error naming it, so a run learns of missing suites before its first step;
    one with fewer than ``episodes_per_suite`` is evaluated on what it has, with a warning giving both counts.
    """
    check_suite_names(suites, data)
    items: dict[str, list[EvalItem]] = {}
    for suite in suites:
        groups = _read_suite(suite, data, layout, resize, prompt_mode, episodes_per_suite)
        if not any(groups.values()):
            raise UserError(f"eval.suites: {suite!r} has no episodes in {data.root or data.perseg_dir or 'the data'}")
        for group, chosen in groups.items():
            if len(chosen) < episodes_per_suite:
                log.warning(
                    "eval suite %r has %d episodes, fewer than eval.episodes_per_suite=%d: it is evaluated on %d",
                    group,
                    len(chosen),
                    episodes_per_suite,
                    len(chosen),
                )
            items[group] = [replace(item, episode=k) for k, item in enumerate(_spread(chosen, episodes_per_suite))]
    if exemplar_swap and SEEN in items:
        donors = items[SEEN] + items.get(UNSEEN, [])
        items[SEEN + SWAPPED] = [replace(i, suite=SEEN + SWAPPED) for i in swap_exemplars(items[SEEN], layout, donors)]
    return items


def _read_suite(
    suite: str, data: EvalData, layout: Layout, resize: str, prompt_mode: str, episodes_per_suite: int
) -> dict[str, list[EvalItem]]:
    """``{group: items}`` of one suite: ``held_in`` splits into seen / unseen (an empty group is left out)."""
    if suite not in SHARD_SUITES:
        episodes = load_named_suite(suite, data.perseg_dir if suite == PERSEG else data.root)
        suite_kind(suite, episodes)  # one kind per suite, or a UserError naming it
        return {suite: [item_from_episode(suite, e, layout, resize, prompt_mode) for e in episodes]}
    if data.episodes_for is None:
        raise UserError(f"eval.suites: {suite!r} needs VisRel shards (set data.root or data.shards)")
    if suite != "held_in":
        episodes = data.episodes_for(SHARD_SUITES[suite], max(1, episodes_per_suite))
        return {suite: [item_from_batch_episode(suite, e, layout) for e in episodes]}
    episodes = data.episodes_for(
        "val", max(1, episodes_per_suite), lambda task: SEEN if task in data.trained else UNSEEN
    )
    groups: dict[str, list[EvalItem]] = {SEEN: [], UNSEEN: []}
    for episode in episodes:
        group = SEEN if episode["task"] in data.trained else UNSEEN
        groups[group].append(item_from_batch_episode(group, episode, layout))
    if episodes and not groups[SEEN]:
        log.warning("eval suite 'held_in': no val pairs of the tasks this run trains on, so no 'seen' group")
    return {group: chosen for group, chosen in groups.items() if chosen}


def _spread(items: list[EvalItem], limit: int) -> list[EvalItem]:
    """At most ``limit`` items, taken round-robin over tasks so every task is represented."""
    by_task: dict[str, list[EvalItem]] = {}
    for item in items:
        by_task.setdefault(item.task, []).append(item)
    groups = list(by_task.values())
    depth = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(depth) for g in groups if i < len(g)][:limit]


def swap_exemplars(items: list[EvalItem], layout: Layout, donors: list[EvalItem] | None = None) -> list[EvalItem]:
    """Copies of ``items`` whose exemplar panels (every cell but the query and the target) come from an item of
    another task among ``donors`` (default: ``items``, which they must start with); query, mask, target, task,
    prompt and suite are kept, so the caller names the swapped suite."""
    donors = items if donors is None else donors
    if len({item.task for item in donors}) < 2 and items:
        raise UserError(f"eval.exemplar_swap: needs held-in episodes of two tasks or more, got only {items[0].task!r}")
    exemplar_cells = [layout.cell(index) for index in range(layout.num_panels - 2)]
    swapped = []
    for i, item in enumerate(items):
        donor = next(d for d in donors[i + 1 :] + donors[:i] if d.task != item.task)
        grid = item.grid.clone()
        for rows, cols in exemplar_cells:
            grid[:, rows, cols] = donor.grid[:, rows, cols]
        swapped.append(replace(item, grid=grid))
    return swapped


def eval_loader(items: dict[str, list[EvalItem]], rank: int, world: int) -> torch.utils.data.DataLoader:
    """Rank ``rank``'s share ``[rank::world]`` of every suite's items, one :class:`EvalItem` per batch.

    Every rank gets as many items as rank zero (the largest share): a shorter share repeats its last item (or rank
    zero's first), marked uncounted. Under FSDP each transformer forward is a collective (the blocks gather their
    shards), so ranks must run the same number of episodes; under DDP the repeat costs no wall time, as the rank
    would otherwise wait for the others at the metrics' sync.
    """
    mine = [item for suite in items.values() for item in suite[rank::world]]
    missing = sum(len(suite[0::world]) for suite in items.values()) - len(mine)
    if missing:
        spare = mine[-1] if mine else next(suite[0] for suite in items.values() if suite)
        mine += [replace(spare, counted=False)] * missing
    return torch.utils.data.DataLoader(mine, batch_size=None, shuffle=False)
