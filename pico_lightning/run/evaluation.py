"""Evaluation outside training (`pico eval`, the demo): load the model, collect the suites, score, write files."""

from __future__ import annotations

import json
from pathlib import Path

from pico_lightning.config import ExperimentConfig
from pico_lightning.evaluation.evaluator import config_items, evaluate
from pico_lightning.evaluation.gallery import gallery_image, gallery_rows, save_png
from pico_lightning.inference.loading import load_inference_model
from pico_lightning.panels import Layout


def eval_datamodule(cfg: ExperimentConfig):
    """The VisRel DataModule for the held_in / held_out suites, when the config names data."""
    if not ({"held_in", "held_out"} & set(cfg.eval.suites)) or not (cfg.data.root or cfg.data.shards):
        return None
    from pico_lightning.data.datamodule import VisRelDataModule

    datamodule = VisRelDataModule(cfg.data, cfg.train.batch_size)
    datamodule.setup("validate")
    return datamodule


def run_evaluation(cfg: ExperimentConfig, lora: str | None, out_dir: Path) -> dict[str, float]:
    """Seed-scored metrics of the base (+ LoRA) on ``cfg.eval.suites``; writes metrics.json and gallery.png."""
    layout = Layout(cfg.data.rows, cfg.data.cols, cfg.data.panel_size)
    model = load_inference_model(cfg.model, lora)
    items = config_items(cfg, layout, eval_datamodule(cfg))
    metrics, outputs = evaluate(model, items, cfg.eval, layout, cfg.model.guidance)
    _, rows = gallery_rows(outputs, layout, cfg.eval.gallery_episodes)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_png(gallery_image(rows), out_dir / "gallery.png")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
