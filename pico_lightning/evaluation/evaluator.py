"""Seed-scored evaluation over suites, shared by the training callback and `pico eval`.

Each rank fills its share of every suite's episodes (``items[rank::world]``) with the seed scorer, updates
torchmetrics states, then every rank calls ``compute()`` (the sync). The trivial baseline B' = B (copy the query)
is scored beside the model, so a number always has its floor next to it. Noise is fixed by ``eval.seed``, so the
same episode gets the same candidates at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pico_lightning.config import EvalConfig, ExperimentConfig
from pico_lightning.data.suites import SUITE_KINDS, Episode, load_named_suite
from pico_lightning.evaluation.metrics import PerTaskMetrics, SuiteMetrics
from pico_lightning.inference.seed_scorer import fill_episode
from pico_lightning.panels import Layout, split_grid


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


@dataclass
class EvalOutput:
    """One evaluated episode: its item, the predicted target panel and the seed scorer's report."""

    item: EvalItem
    prediction: torch.Tensor  # (3, S, S)
    report: dict


def item_from_episode(episode: Episode, layout: Layout, mode: str, prompt_mode: str) -> EvalItem:
    grid, mask, target = episode.grid(layout, mode)
    prompt = "" if prompt_mode == "none" else episode.prompt
    return EvalItem(episode.suite, episode.task, episode.kind, prompt, grid, mask, target)


def item_from_batch_episode(suite: str, episode: dict, layout: Layout) -> EvalItem:
    """A DataModule episode dict (grid with the ground-truth target in place) -> an item with the target cut out."""
    grid = episode["grid"].clone()
    target = split_grid(grid, layout)[-1].clone()
    rows, cols = layout.cell(layout.num_panels - 1)
    grid[:, rows, cols] = -1.0
    return EvalItem(suite, episode["task"], SUITE_KINDS[suite], episode["prompt"], grid, episode["mask"], target)


def collect_items(
    suites: list[str],
    root: str,
    layout: Layout,
    resize: str,
    prompt_mode: str,
    episodes_per_suite: int,
    datamodule=None,
    perseg_dir: str = "",
) -> dict[str, list[EvalItem]]:
    """Episodes of every requested suite, in a fixed order, at most ``episodes_per_suite`` each."""
    items: dict[str, list[EvalItem]] = {}
    for suite in suites:
        if suite in ("held_in", "held_out"):
            if datamodule is None:
                continue
            split = "val" if suite == "held_in" else "test"
            episodes = datamodule.eval_episodes(split, max(1, episodes_per_suite))
            chosen = [item_from_batch_episode(suite, e, layout) for e in episodes]
        else:
            source = perseg_dir if suite == "perseg" else root
            chosen = [item_from_episode(e, layout, resize, prompt_mode) for e in load_named_suite(suite, source)]
        items[suite] = _spread(chosen, episodes_per_suite)
    return items


def data_root(shards: str, root: str) -> str:
    """The prepared data directory (where suites/ lives): data.root, or data.shards when it is a directory."""
    return root or (shards if shards and Path(shards).is_dir() else "")


def config_items(cfg: ExperimentConfig, layout: Layout, datamodule=None) -> dict[str, list[EvalItem]]:
    """The evaluation episodes ``cfg`` asks for (suites, data, prompt mode, episodes per suite)."""
    data = cfg.data
    return collect_items(
        cfg.eval.suites,
        data_root(data.shards, data.root),
        layout,
        data.resize,
        data.prompt,
        cfg.eval.episodes_per_suite,
        datamodule,
        cfg.eval.perseg_dir,
    )


def _spread(items: list[EvalItem], limit: int) -> list[EvalItem]:
    """At most ``limit`` items, taken round-robin over tasks so every task is represented."""
    by_task: dict[str, list[EvalItem]] = {}
    for item in items:
        by_task.setdefault(item.task, []).append(item)
    groups = list(by_task.values())
    depth = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(depth) for g in groups if i < len(g)][:limit]


@torch.no_grad()
def evaluate(
    model,
    items: dict[str, list[EvalItem]],
    cfg: EvalConfig,
    layout: Layout,
    guidance: float,
    rank: int = 0,
    world: int = 1,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> tuple[dict, list[EvalOutput]]:
    """Flat metrics ``eval/<suite>/<metric>`` (+ per task, baseline, cost, ``eval/score``) and this rank's outputs."""
    device = model.device
    seeds = list(range(cfg.seed, cfg.seed + cfg.num_seeds))
    scorer = cfg if cfg.num_seeds > 1 else None
    metrics: dict[str, float] = {}
    outputs: list[EvalOutput] = []
    evaluations = torch.zeros((), device=device)
    for suite, suite_items in items.items():
        kind = SUITE_KINDS[suite]
        tasks = sorted({i.task for i in suite_items})
        model_metrics = PerTaskMetrics(suite, kind, tasks).to(device)
        baseline = SuiteMetrics(kind).to(device)
        for item in suite_items[rank::world]:
            image, report = fill_episode(
                model,
                item.grid[None].to(device),
                item.mask[None].to(device),
                model.text(item.prompt),
                cfg.num_steps,
                guidance,
                seeds,
                layout,
                scorer,
            )
            prediction = split_grid(image[0], layout)[-1].clamp(-1, 1)
            target = item.target.to(device)
            model_metrics.update(prediction[None], target[None], [item.task])
            query = split_grid(item.grid.to(device), layout)[-2]
            baseline.update(query[None], target[None])
            evaluations += report["model_evaluations"]
            outputs.append(EvalOutput(item, prediction.cpu(), report))
        metrics.update({f"eval/{k}": v for k, v in model_metrics.compute().items()})
        metrics.update({f"eval/{suite}/baseline_{k}": v for k, v in baseline.compute().items() if k != "episodes"})
    metrics["eval/model_evaluations"] = float(reduce_sum(evaluations))
    metrics["eval/score"] = summary_score(metrics, items)
    return metrics, outputs


def summary_score(metrics: dict[str, float], items: dict[str, list[EvalItem]]) -> float:
    """One number to rank checkpoints: the mean over suites of mIoU (mask suites) or SSIM (image suites)."""
    values = [metrics[f"eval/{s}/{'miou' if SUITE_KINDS[s] == 'mask' else 'ssim'}"] for s in items if items[s]]
    return sum(values) / len(values) if values else 0.0
