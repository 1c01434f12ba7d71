"""What a run leaves on disk besides checkpoints and evaluations: config.yaml, lora/ (weights + README.md model
card) and summary.json.

Every rank enters these hooks (the LoRA gather under FSDP is a collective; none hides in rank-zero code); only
global rank zero writes.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from pico_lightning.config import ExperimentConfig, load_config, save_config, to_container
from pico_lightning.files import write_json
from pico_lightning.model.lora import WEIGHTS_NAME, export_lora
from pico_lightning.model.lora_card import write_lora_card
from pico_lightning.training.loggers import JsonlLogger


class RunArtifacts(pl.Callback):
    """config.yaml at fit start, the config inside every checkpoint, lora/ (diffusers format) at the end of training."""

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

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Export the LoRA from the full (gathered) state dict: right under DDP and FSDP alike. At the end of
        training, not of the fit: before PicoModule.on_train_end drops the base."""
        state = trainer.strategy.lightning_module_state_dict()  # a collective under FSDP: every rank calls it
        if trainer.is_global_zero:
            own = {k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.")}
            export_lora(pl_module.transformer, self.run_dir / "lora", own)
            write_lora_card(self.run_dir / "lora", self.cfg)  # completed with the evaluation by write_summary


def write_summary(run_dir: Path, step: int, metrics: dict[str, float]) -> None:
    """summary.json: the run finished, its final step and final evaluation, where its LoRA and checkpoint are;
    lora/README.md gains the final evaluation."""
    summary = {
        "status": "finished",
        "step": step,
        "eval": {k: float(v) for k, v in metrics.items()},
        "lora": str(run_dir / "lora"),
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
    }
    write_json(run_dir / "summary.json", summary)
    if (run_dir / "lora" / WEIGHTS_NAME).is_file():
        write_lora_card(run_dir / "lora", load_config(run_dir / "config.yaml"), summary)
