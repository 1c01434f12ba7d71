"""What a validation leaves behind: ``eval/step_<N>/metrics.json`` and ``gallery.png``, and a W&B table.

Evaluation itself runs in Lightning's validation loop: ``PicoModule.validation_step`` fills one episode and returns
its :class:`~pico_lightning.evaluation.evaluator.EvalOutput`, every rank fills its share of the fixed episodes, and
the module logs the metrics synced by torchmetrics at the epoch's end. :class:`EvalArtifacts` is the one callback
that collects from it: the outputs of the gallery episodes as each batch ends, then, once the loop has put the
synced metrics in ``trainer.callback_metrics``, global rank zero writes them, a gallery of its own first episodes
per suite (the same episodes and noise every time) and, when W&B is on, a table of four-panel pictures with each
seed's score.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl

from pico_lightning.evaluation.evaluator import EvalOutput
from pico_lightning.evaluation.gallery import gallery_image, gallery_rows, save_png
from pico_lightning.files import write_json
from pico_lightning.panels import Layout

PREFIX = "eval/"  # the keys PicoModule logs for an evaluation


def logged_evaluation(trainer: pl.Trainer) -> dict[str, float]:
    """The last evaluation's synced metrics (``eval/...``) as the trainer holds them; empty when none ran."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(PREFIX)}


class EvalArtifacts(pl.Callback):
    """Writes each validation's metrics and gallery under ``eval_dir/step_<N>/`` (global rank zero only)."""

    def __init__(self, eval_dir: Path, gallery_episodes: int, layout: Layout):
        self.eval_dir = Path(eval_dir)
        self.gallery_episodes, self.layout = gallery_episodes, layout
        self.outputs: list[EvalOutput] = []  # this validation's first gallery_episodes outputs per suite

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.outputs = []

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module, outputs: EvalOutput, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        suite = outputs.item.suite
        if not (trainer.is_global_zero and outputs.item.counted):
            return
        if sum(o.item.suite == suite for o in self.outputs) < self.gallery_episodes:
            self.outputs.append(outputs)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        step = trainer.global_step
        out_dir = self.eval_dir / f"step_{step}"
        gallery, rows = gallery_rows(self.outputs, self.layout, self.gallery_episodes)
        save_png(gallery_image(rows), out_dir / "gallery.png")
        write_json(out_dir / "metrics.json", {"step": step, **logged_evaluation(trainer)})
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                _log_table(logger, gallery, rows, step)
        self.outputs = []


def _log_table(logger, gallery: list[EvalOutput], rows: list, step: int) -> None:
    import wandb

    data = [
        [o.item.suite, o.item.task, wandb.Image(row), o.report["chosen_seed"], json.dumps(o.report["scores"])]
        for o, row in zip(gallery, rows)
    ]
    logger.log_table(
        "eval/gallery", columns=["suite", "task", "A|A'|B|B' pred|B' true", "seed", "scores"], data=data, step=step
    )
