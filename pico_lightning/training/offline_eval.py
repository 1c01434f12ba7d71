"""Evaluation outside training (`pico eval`, the demo): read the suites, load the model, score, write files."""

from __future__ import annotations

from pathlib import Path

from pico_lightning.config import ExperimentConfig
from pico_lightning.pipeline import PicoPipeline, evaluation_items


def run_evaluation(cfg: ExperimentConfig, lora: str | None, out_dir: Path) -> dict[str, float]:
    """Seed-scored metrics of the base (+ LoRA) on ``cfg.eval.suites``; writes metrics.json and gallery.png."""
    items = evaluation_items(cfg)  # before the model: a missing suite fails fast
    return PicoPipeline(cfg, lora).evaluate(out_dir, items=items)
