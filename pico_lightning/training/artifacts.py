"""What a run leaves on disk as it starts: config.yaml, and the config inside every checkpoint; metrics.jsonl cut
back to the step a resumed run continues from. (lora/ and summary.json come at the end: training/fit_end.py.)
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from pico_lightning.config import ExperimentConfig, save_config, to_container
from pico_lightning.training.loggers import JsonlLogger


class RunArtifacts(pl.Callback):
    """config.yaml at fit start (global rank zero), the config inside every checkpoint."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            save_config(self.cfg, self.run_dir / "config.yaml")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """On a resume, cut metrics.jsonl back to the checkpoint's step (the dead run's later rows go)."""
        for logger in trainer.loggers:
            if isinstance(logger, JsonlLogger):
                logger.cut(trainer.global_step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["pico_config"] = to_container(self.cfg)
