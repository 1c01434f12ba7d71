"""Evaluation outside training (`pico eval`, the demo): load the model, read the suites, score, write files."""

from __future__ import annotations

from pathlib import Path

from pico_lightning.config import ExperimentConfig
from pico_lightning.data.datamodule import VisRelDataModule
from pico_lightning.evaluation.evaluator import evaluate
from pico_lightning.evaluation.gallery import gallery_image, gallery_rows, save_png
from pico_lightning.files import write_json
from pico_lightning.inference.loading import load_inference_model
from pico_lightning.panels import Layout


def run_evaluation(cfg: ExperimentConfig, lora: str | None, out_dir: Path) -> dict[str, float]:
    """Seed-scored metrics of the base (+ LoRA) on ``cfg.eval.suites``; writes metrics.json and gallery.png."""
    layout = Layout(cfg.data.rows, cfg.data.cols, cfg.data.panel_size)
    items = VisRelDataModule(cfg.data, cfg.train.batch_size, cfg.eval).eval_items()  # before the model: fail fast
    model = load_inference_model(cfg.model, lora)
    metrics, outputs = evaluate(model, items, cfg.eval, layout, cfg.model.guidance)
    _, rows = gallery_rows(outputs, layout, cfg.eval.gallery_episodes)
    save_png(gallery_image(rows), out_dir / "gallery.png")
    write_json(out_dir / "metrics.json", metrics)
    return metrics
