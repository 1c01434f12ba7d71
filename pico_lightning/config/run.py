"""Logging and run-directory sections of the experiment schema."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pico_lightning.config.checks import check


@dataclass
class LoggingConfig:
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    """W&B mode; the WANDB_MODE environment variable wins when set."""
    project: str = ""
    """W&B project; empty: the WANDB_PROJECT environment variable if set, else 'pico'."""
    entity: str = ""
    """W&B entity (user or team); empty: the WANDB_ENTITY environment variable if set, else your default entity."""
    group: str = ""
    """W&B group (sweeps set one per sweep)."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""
    log_every_n_steps: int = 10
    """Scalar logging interval."""

    def mode(self) -> str:
        """The W&B mode in effect: the WANDB_MODE environment variable wins over wandb_mode."""
        return os.environ.get("WANDB_MODE") or self.wandb_mode


@dataclass
class RunConfig:
    name: str = "pico"
    """Run name (the run directory's name and the W&B run name)."""
    dir: str = "runs"
    """Parent directory of run directories."""
    resume: Literal["never", "auto"] = "never"
    """auto: continue from <run dir>/checkpoints/last.ckpt when it exists."""

    def __post_init__(self) -> None:
        check(
            bool(self.name) and Path(self.name).name == self.name and self.name not in (".", ".."),
            "run.name",
            "a plain directory name (no '/' or '..'; run.dir says where runs live)",
            self.name,
        )

    def path(self) -> Path:
        return Path(self.dir) / self.name
