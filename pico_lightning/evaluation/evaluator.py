"""Seed-scored evaluation of one episode, and the metrics of a whole evaluation, shared by every caller.

``evaluate_item`` fills one :class:`~pico_lightning.data.eval_items.EvalItem` with the seed scorer;
:class:`EvalMetrics` keeps, per suite and per task, torchmetrics states for the model and for the trivial
baseline B' = B (copy the query), so a number always has its floor next to it, plus the transformer evaluations
spent. Training runs these in Lightning's validation loop (training/module.py); ``pico eval`` and scripts use
:func:`evaluate`. Noise is fixed by ``eval.seed`` and the episode's position (:func:`episode_seeds`), so the same
episode gets the same candidates at every step, and different episodes get different ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from pico_lightning.config import SEED_STRIDE, EvalConfig
from pico_lightning.data.eval_items import SWAPPED, UNSEEN, EvalItem
from pico_lightning.evaluation.metrics import PerTaskMetrics
from pico_lightning.inference.fill_model import FillModel
from pico_lightning.inference.seed_scorer import fill_episode
from pico_lightning.panels import Layout, split_grid


def episode_seeds(base: int, episode: int, count: int) -> list[int]:
    """The ``count`` candidate seeds of the ``episode``-th item of a suite: ``base + episode * SEED_STRIDE + i``.

    Episodes draw different noise, so a suite's mean does not hinge on |S| draws shared by every episode (nor can a
    seed score win by finding the one lucky draw); the first k seeds are the same whatever ``count`` is."""
    first = base + episode * SEED_STRIDE
    return list(range(first, first + count))


@dataclass
class EvalOutput:
    """One evaluated episode: its item, the predicted target panel and the seed scorer's report."""

    item: EvalItem
    prediction: torch.Tensor  # (3, S, S) in [-1, 1], on the CPU
    report: dict


def evaluate_item(model: FillModel, item: EvalItem, cfg: EvalConfig, layout: Layout, guidance: float) -> EvalOutput:
    """Fill ``item``'s target panel with |S| = ``eval.num_seeds`` candidates (the seed scorer when |S| > 1)."""
    device = model.device
    image, report = fill_episode(
        model,
        item.grid[None].to(device),
        item.mask[None].to(device),
        model.text(item.prompt),
        cfg.num_steps,
        guidance,
        episode_seeds(cfg.seed, item.episode, cfg.num_seeds),
        layout,
        cfg if cfg.num_seeds > 1 else None,
    )
    return EvalOutput(item, split_grid(image[0], layout)[-1].clamp(-1, 1).cpu(), report)


class SuitePlan(NamedTuple):
    """What :class:`EvalMetrics` needs of a suite up front: how it is scored and its task names."""

    kind: str  # "mask" or "image" (evaluation/metrics.py)
    tasks: list[str]


class EvalMetrics(torch.nn.Module):
    """Per-suite and per-task model and baseline metrics over a fixed plan ``{suite: SuitePlan}`` (the same on every
    rank, the condition for syncing); ``compute()`` is a collective: call it on every rank."""

    def __init__(self, plan: dict[str, SuitePlan], layout: Layout) -> None:
        super().__init__()
        self.layout = layout
        self.plan = plan
        self.suites = list(plan)
        self.model_metrics = torch.nn.ModuleList(PerTaskMetrics(s, p.kind, p.tasks) for s, p in plan.items())
        self.baselines = torch.nn.ModuleList(PerTaskMetrics(s, p.kind, p.tasks) for s, p in plan.items())
        self.register_buffer("evaluations", torch.zeros((), dtype=torch.float64), persistent=False)

    def update(self, output: EvalOutput) -> None:
        index = self.suites.index(output.item.suite)
        device = self.evaluations.device
        target, tasks = output.item.target[None].to(device), [output.item.task]
        self.model_metrics[index].update(output.prediction[None].to(device), target, tasks)
        query = split_grid(output.item.grid.to(device), self.layout)[-2]
        self.baselines[index].update(query[None], target, tasks)
        self.evaluations += output.report["model_evaluations"]

    def compute(self, reduce_sum=lambda t: t) -> dict[str, float]:
        """Flat ``eval/<suite>/<metric>``, ``eval/<suite>/<task>/<metric>``, each with its ``baseline_<metric>``,
        plus the cost and ``eval/score``; ``reduce_sum`` sums the evaluation count over ranks."""
        metrics: dict[str, float] = {}
        for model_metrics, baseline in zip(self.model_metrics, self.baselines, strict=True):
            metrics.update({f"eval/{k}": v for k, v in model_metrics.compute().items()})
            metrics.update({_baseline_key(k): v for k, v in baseline.compute().items() if _is_score(k)})
        metrics["eval/model_evaluations"] = float(reduce_sum(self.evaluations.clone()))
        metrics = _rename_swapped(metrics)
        metrics["eval/score"] = summary_score(metrics, {s: p.kind for s, p in self.plan.items() if _scored(s)})
        return metrics

    def reset(self) -> None:
        for metrics in (*self.model_metrics, *self.baselines):
            metrics.reset()
        self.evaluations.zero_()


def evaluation_plan(items: dict[str, list[EvalItem]]) -> dict[str, SuitePlan]:
    """``{suite: SuitePlan(kind, sorted task names)}`` of a set of items: what :class:`EvalMetrics` needs up front."""
    return {
        suite: SuitePlan(suite_items[0].kind if suite_items else "image", sorted({i.task for i in suite_items}))
        for suite, suite_items in items.items()
    }


@torch.no_grad()
def evaluate(
    model: FillModel, items: dict[str, list[EvalItem]], cfg: EvalConfig, layout: Layout, guidance: float
) -> tuple[dict[str, float], list[EvalOutput]]:
    """Every item on this process, with a progress bar: (metrics as :meth:`EvalMetrics.compute`, outputs)."""
    metrics = EvalMetrics(evaluation_plan(items), layout).to(model.device)
    outputs = []
    for item in tqdm(_flatten(items.values()), desc="evaluating", unit="episode", leave=False):
        outputs.append(evaluate_item(model, item, cfg, layout, guidance))
        metrics.update(outputs[-1])
    return metrics.compute(), outputs


def summary_score(metrics: dict[str, float], kinds: dict[str, str]) -> float:
    """One number to rank checkpoints: the mean over suites ``{suite: kind}`` of mIoU (mask suites) or SSIM (image
    suites)."""
    values = [metrics[f"eval/{suite}/{'miou' if kind == 'mask' else 'ssim'}"] for suite, kind in kinds.items()]
    return sum(values) / len(values) if values else 0.0


def _scored(suite: str) -> bool:
    """Whether a suite counts in ``eval/score``: not the swap control, and not the unseen held-in tasks, whose set
    changes with the training selection (held_in counts by its seen tasks, as when it held only trained ones)."""
    return not suite.endswith(SWAPPED) and suite != UNSEEN


def _is_score(key: str) -> bool:
    return key.rsplit("/", 1)[-1] not in ("episodes", "tasks")


def _baseline_key(key: str) -> str:
    """``seen/denoise/psnr`` -> ``eval/seen/denoise/baseline_psnr``."""
    head, name = key.rsplit("/", 1)
    return f"eval/{head}/baseline_{name}"


def _rename_swapped(metrics: dict[str, float]) -> dict[str, float]:
    """``eval/seen_swapped/psnr`` -> ``eval/seen/swapped_psnr``, beside the true exemplar's ``psnr``."""
    renamed = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if parts[1].endswith(SWAPPED):
            parts[1] = parts[1].removesuffix(SWAPPED)
            parts[-1] = f"swapped_{parts[-1]}"
        renamed["/".join(parts)] = value
    return renamed


def _flatten(groups: Iterable[list[EvalItem]]) -> list[EvalItem]:
    return [item for group in groups for item in group]
