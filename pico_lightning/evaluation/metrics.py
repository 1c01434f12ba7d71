"""Suite metrics on torchmetrics, correct across ranks: every state is a sum, reduced when ``compute()`` runs.

Inputs are the B' panels as the model produced them and their ground truth, ``(N, 3, S, S)`` in [-1, 1].

- kind ``"mask"``: outputs are thresholded with :func:`output_to_mask`. ``miou`` is the mean over episodes of
  each episode's IoU (an episode counts once whatever its object size; an empty union counts as IoU 1);
  ``iou`` is torchmetrics' ``BinaryJaccardIndex``, the IoU of all pixels pooled over the dataset.
- kind ``"image"``: images mapped to [0, 1]. ``psnr`` is the mean over episodes of each episode's PSNR in dB
  (an exact match is +inf, as torchmetrics gives); ``ssim`` is ``StructuralSimilarityIndexMeasure`` (Gaussian
  11 px window, sigma 1.5), itself a mean over episodes.

Both kinds also report ``episodes``. :class:`PerTaskMetrics` keeps one :class:`SuiteMetrics` per task, built
up front from the task names so every rank holds the same states (the condition for syncing). Under DDP call
``compute()`` on every rank: it is a collective.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torchmetrics import MeanMetric, Metric, MetricCollection, SumMetric
from torchmetrics.classification import BinaryJaccardIndex
from torchmetrics.functional.image import peak_signal_noise_ratio
from torchmetrics.image import StructuralSimilarityIndexMeasure

# torchmetrics warns when a rank computes a metric it never updated; with episodes sharded over ranks that is
# normal for a task that happened to land elsewhere, and the synced states are still right.
_NO_UPDATE_WARNING = r".*was called before the ``update`` method.*"


def output_to_mask(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, S, S) in [-1, 1] -> (..., S, S) bool: mean over RGB > 0, i.e. brighter than mid-grey."""
    return image.mean(dim=-3) > 0


def episode_iou(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, S, S) masks (bool or 0/1) -> (N,) float IoU; an episode whose union is empty scores 1."""
    preds, target = preds.bool().flatten(1), target.bool().flatten(1)
    intersection = (preds & target).sum(1).double()
    union = (preds | target).sum(1).double()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def episode_psnr(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) in [0, 1] -> (N,) PSNR in dB, one per image."""
    return peak_signal_noise_ratio(preds, target, data_range=1.0, dim=(1, 2, 3), reduction="none")


class EpisodeMean(MeanMetric):
    """Mean over episodes of a per-episode score ``score_fn(preds, target) -> (N,)``, summed in float64.

    NaN scores are kept (a NaN output gives a NaN mean, not a silently shorter one); no episode gives NaN.
    """

    def __init__(self, score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__(nan_strategy="disable")
        self.set_dtype(torch.float64)
        self.score_fn = score_fn

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(self.score_fn(preds, target))

    def compute(self) -> torch.Tensor:
        return super().compute().float()


class EpisodeCount(SumMetric):
    """Number of episodes (first dimension of ``preds``) seen over all ranks."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds.shape[0])


def build_metrics(kind: str) -> dict[str, Metric]:
    """The named metrics of one kind (``"mask"`` or ``"image"``); inputs as :func:`prepare` returns them."""
    if kind == "mask":
        return {"miou": EpisodeMean(episode_iou), "iou": BinaryJaccardIndex(), "episodes": EpisodeCount()}
    if kind == "image":
        return {
            "psnr": EpisodeMean(episode_psnr),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
            "episodes": EpisodeCount(),
        }
    raise ValueError(f"metric kind {kind!r}: expected 'mask' or 'image'")


def prepare(kind: str, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, S, S) in [-1, 1] -> masks (N, S, S) long for ``"mask"``, images (N, 3, S, S) in [0, 1] else."""
    if outputs.shape != targets.shape or outputs.dim() != 4 or outputs.shape[1] != 3:
        raise ValueError(f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)}: expected (N, 3, S, S)")
    if kind == "mask":
        return output_to_mask(outputs).long(), output_to_mask(targets).long()
    return ((outputs.float() + 1) / 2).clamp(0, 1), ((targets.float() + 1) / 2).clamp(0, 1)


class SuiteMetrics(torch.nn.Module):
    """The metrics of one suite kind over B' panels; ``compute()`` -> {"miou", "iou", "episodes"} or
    {"psnr", "ssim", "episodes"} as floats."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.metrics = MetricCollection(build_metrics(kind), compute_groups=False)

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: outputs and targets (N, 3, S, S) in [-1, 1]."""
        self.metrics.update(*prepare(self.kind, outputs, targets))

    def compute(self) -> dict[str, float]:
        """Sync over ranks (collective: call on every rank) and return the metrics as floats."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_UPDATE_WARNING)
            values = self.metrics.compute()
        return {name: float(value) for name, value in values.items()}

    def reset(self) -> None:
        self.metrics.reset()


class PerTaskMetrics(torch.nn.Module):
    """Suite-wide and per-task :class:`SuiteMetrics` for one suite whose task names are known up front."""

    def __init__(self, suite: str, kind: str, tasks: Sequence[str]) -> None:
        super().__init__()
        self.suite, self.kind = suite, kind
        self.tasks = list(dict.fromkeys(tasks))  # unique, in the given order: the same on every rank
        self.overall = SuiteMetrics(kind)
        self.per_task = torch.nn.ModuleList(SuiteMetrics(kind) for _ in self.tasks)  # list: names may hold dots

    def update(self, outputs: torch.Tensor, targets: torch.Tensor, tasks: Sequence[str]) -> None:
        """Add a batch: outputs and targets (N, 3, S, S) in [-1, 1] and the N episodes' task names."""
        unknown = sorted(set(tasks) - set(self.tasks))
        if len(tasks) != outputs.shape[0] or unknown:
            raise ValueError(f"{len(tasks)} task names for {outputs.shape[0]} outputs; unknown tasks: {unknown}")
        self.overall.update(outputs, targets)
        for index, task in enumerate(self.tasks):
            rows = [row for row, name in enumerate(tasks) if name == task]
            if rows:
                self.per_task[index].update(outputs[rows], targets[rows])

    def compute(self) -> dict[str, float]:
        """Flat ``"<suite>/<metric>"`` and ``"<suite>/<task>/<metric>"`` floats, and ``"<suite>/tasks"`` (how many
        tasks had episodes); tasks with no episode on any rank are left out. Collective: call on every rank."""
        results = {f"{self.suite}/{name}": value for name, value in self.overall.compute().items()}
        scored = 0
        for task, metrics in zip(self.tasks, self.per_task, strict=True):
            values = metrics.compute()
            if values["episodes"] > 0:
                scored += 1
                results.update({f"{self.suite}/{task}/{name}": value for name, value in values.items()})
        results[f"{self.suite}/tasks"] = float(scored)
        return results

    def reset(self) -> None:
        self.overall.reset()
        for metrics in self.per_task:
            metrics.reset()
