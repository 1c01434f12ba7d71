"""What a validation leaves behind: ``eval/step_<N>/metrics.json`` and ``gallery.png``, and a W&B table.

Evaluation itself runs in Lightning's validation loop (``PicoModule.validation_step``: every rank fills its share
of the fixed episodes, torchmetrics syncs). This callback runs after it, on every rank, and only global rank zero
writes: the synced metrics, a gallery of its own first episodes per suite (the same episodes and noise every time)
and, when W&B is on, a table of four-panel pictures with each seed's score.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl

from pico_lightning.evaluation.evaluator import EvalOutput
from pico_lightning.evaluation.gallery import gallery_image, gallery_rows, save_png
from pico_lightning.files import write_json


class EvalArtifacts(pl.Callback):
    """Writes each validation's metrics and gallery under ``eval_dir/step_<N>/`` (global rank zero only)."""

    def __init__(self, eval_dir: Path, gallery_episodes: int):
        self.eval_dir = Path(eval_dir)
        self.gallery_episodes = gallery_episodes

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        step = trainer.global_step
        out_dir = self.eval_dir / f"step_{step}"
        gallery, rows = gallery_rows(pl_module.val_outputs, pl_module.layout, self.gallery_episodes)
        save_png(gallery_image(rows), out_dir / "gallery.png")
        write_json(out_dir / "metrics.json", {"step": step, **pl_module.val_results})
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                _log_table(logger, gallery, rows, step)


def _log_table(logger, gallery: list[EvalOutput], rows: list, step: int) -> None:
    import wandb

    data = [
        [o.item.suite, o.item.task, wandb.Image(row), o.report["chosen_seed"], json.dumps(o.report["scores"])]
        for o, row in zip(gallery, rows)
    ]
    logger.log_table(
        "eval/gallery", columns=["suite", "task", "A|A'|B|B' pred|B' true", "seed", "scores"], data=data, step=step
    )
