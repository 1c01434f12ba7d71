"""What a run leaves on disk besides checkpoints: the resolved config, the exported LoRA and summary.json.

Every rank enters these hooks (no collective hides in rank-zero code); only global rank zero writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning.pytorch as pl

from pico_lightning.config import ExperimentConfig, save_config, to_container
from pico_lightning.model.lora import export_lora


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (tmp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


class RunArtifacts(pl.Callback):
    """config.yaml at fit start, the config inside every checkpoint, lora/ and summary.json at the end."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            save_config(self.cfg, self.run_dir / "config.yaml")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["pico_config"] = to_container(self.cfg)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        export_lora(pl_module.transformer, self.run_dir / "lora")
        final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("eval/")}
        write_json(
            self.run_dir / "summary.json",
            {
                "status": "finished",
                "step": trainer.global_step,
                "eval": final,
                "lora": str(self.run_dir / "lora"),
                "checkpoint": str(self.run_dir / "checkpoints" / "last.ckpt"),
            },
        )
