"""The data section of the experiment schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pico_lightning.config.checks import check
from pico_lightning.layout import Layout


@dataclass
class DataConfig:
    shards: str = ""
    """Training shards: a directory holding index.json, a brace pattern, a URL or a `pipe:` command."""
    root: str = ""
    """Data root written by `pico prep` (shards + index.json); used when `shards` is empty."""
    panel_size: int = 32
    """Side of each square panel in pixels; the grid is rows*panel_size x cols*panel_size."""
    rows: int = 2
    """Grid rows: rows-1 exemplar pairs plus the query row (2 = the classic A|A' over B|B')."""
    cols: int = 2
    """Grid columns: input | output (2), or more panels per row for k-shot layouts."""
    resize: Literal["resize", "letterbox"] = "resize"
    """How a picture is fitted to a square panel: stretch, or keep aspect and pad with black."""
    tasks: list[str] = field(default_factory=list)
    """Train only on these tasks (empty = all held-in tasks)."""
    exclude_tasks: list[str] = field(default_factory=list)
    """Never train on these tasks."""
    num_tasks: int = 0
    """Keep this many tasks, a seeded choice stratified over the four families (0 = all)."""
    task_fraction: float = 0.0
    """Keep this fraction of the held-in tasks (rounded, at least 1), chosen as data.num_tasks chooses (0 = off):
    a task count that fits any pool size, as an ablation over datasets needs."""
    shots_per_task: int = 0
    """Keep this many samples per task (0 = all)."""
    sampling: Literal["task_balanced", "uniform", "weighted"] = "task_balanced"
    """Episode sampling: each task equally likely, each sample equally likely, or data.task_weights."""
    task_weights: dict[str, float] = field(default_factory=dict)
    """Per-task weights for sampling=weighted (missing tasks weigh 1)."""
    prompt: Literal["none", "category", "task"] = "category"
    """Text per episode: empty, the family's label (e.g. 'Segment'), or the task's own prompt."""
    prompt_dropout: float = 0.1
    """Probability that an episode's prompt is replaced by the empty prompt in training."""
    augment: bool = True
    """Paired augmentation (the same flip for all panels of an episode)."""
    num_workers: int = 2
    """DataLoader workers per rank."""
    epoch_batches: int = 100
    """Batches per rank per epoch (WebDataset with_epoch; equal on every rank)."""
    seed: int = 0
    """Seed of task subsets, episode sampling and augmentation."""

    def __post_init__(self) -> None:
        check(self.panel_size >= 1, "data.panel_size", "a positive integer", self.panel_size)
        check(
            self.rows >= 2 and self.cols >= 2,
            "data.rows/data.cols",
            "at least 2 each",
            (self.rows, self.cols),
        )
        check(
            0.0 <= self.prompt_dropout <= 1.0,
            "data.prompt_dropout",
            "a number in [0, 1]",
            self.prompt_dropout,
        )
        check(self.num_tasks >= 0, "data.num_tasks", "an integer >= 0", self.num_tasks)
        check(0.0 <= self.task_fraction <= 1.0, "data.task_fraction", "a number in [0, 1]", self.task_fraction)
        check(
            not (self.num_tasks and self.task_fraction),
            "data.num_tasks/data.task_fraction",
            "at most one of them set",
            (self.num_tasks, self.task_fraction),
        )
        check(self.shots_per_task >= 0, "data.shots_per_task", "an integer >= 0", self.shots_per_task)
        check(self.num_workers >= 0, "data.num_workers", "an integer >= 0", self.num_workers)
        check(self.epoch_batches >= 1, "data.epoch_batches", "an integer >= 1", self.epoch_batches)

    def layout(self) -> Layout:
        """The grid geometry of every episode: ``rows x cols`` panels of ``panel_size`` pixels."""
        return Layout(self.rows, self.cols, self.panel_size)
