"""Loggers of a run: a plain ``metrics.jsonl`` (what reports and plots read) and W&B (offline unless told)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from pico_lightning.config import ExperimentConfig, to_container


class JsonlLogger(Logger):
    """One JSON object per logged step: ``{"step": N, "train/loss": ..., ...}``, appended (resumes keep history)."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return "0"

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The resolved config is written as config.yaml by the run; nothing to add here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"step": step}
        for key, value in metrics.items():
            value = value.item() if isinstance(value, torch.Tensor) else value
            row[key] = value if isinstance(value, (int, str)) or math.isfinite(value) else str(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def wandb_mode(cfg: ExperimentConfig) -> str:
    """The W&B mode: the WANDB_MODE environment variable wins over logging.wandb_mode."""
    return os.environ.get("WANDB_MODE") or cfg.logging.wandb_mode


def build_loggers(cfg: ExperimentConfig, run_dir: Path) -> list[Logger]:
    """metrics.jsonl always; W&B unless its mode is 'disabled' (name, group, tags and config from the experiment)."""
    loggers: list[Logger] = [JsonlLogger(run_dir / "metrics.jsonl")]
    mode = wandb_mode(cfg)
    if mode != "disabled":
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(
            WandbLogger(
                name=cfg.run.name,
                project=cfg.logging.project,
                group=cfg.logging.group or None,
                tags=list(cfg.logging.tags) or None,
                save_dir=str(run_dir),
                offline=mode == "offline",
                mode=mode,
                config=to_container(cfg),
                id=_wandb_id(run_dir),
                resume="allow",
            )
        )
    return loggers


def finish_wandb(loggers: list[Logger]) -> None:
    """Close this process's W&B run after a fit, so a later fit in the same process (a sweep, the demo, tests)
    starts its own run instead of silently reusing this one."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()


def _wandb_id(run_dir: Path) -> str:
    """A stable W&B run id per run directory, so a resumed run continues the same W&B run."""
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
