"""Loggers of a run: a plain ``metrics.jsonl`` (what reports and plots read) and W&B (offline unless told)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from pico_lightning.config import ExperimentConfig, to_container
from pico_lightning.data.sources import find_index
from pico_lightning.files import write_text
from pico_lightning.run_dir import RunDir
from pico_lightning.training.wandb_run import PicoWandbLogger, build_wandb_logger


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
    def cut(self, step: int) -> None:
        """Drop the rows a run resumed after ``step`` optimizer steps will log again, so history reads as one run:
        training rows carry the index of their step (kept below ``step``), evaluation rows the number of steps
        evaluated (kept up to ``step``: Lightning does not repeat that evaluation)."""
        if not self.path.is_file():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [line for line in rows if _before(line, step)]
        if len(kept) != len(rows):
            write_text(self.path, "".join(f"{line}\n" for line in kept))

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"step": step}
        for key, value in metrics.items():
            value = value.item() if isinstance(value, torch.Tensor) else value
            row[key] = value if isinstance(value, (int, str)) or math.isfinite(value) else str(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def _before(line: str, step: int) -> bool:
    try:
        row = json.loads(line)
    except ValueError:  # a torn last line from a killed run
        return False
    is_eval = any(key.startswith("eval/") for key in row)
    return row.get("step", 0) <= step if is_eval else row.get("step", 0) < step


def build_loggers(cfg: ExperimentConfig, run: RunDir) -> list[Logger]:
    """metrics.jsonl always; W&B unless its mode is 'disabled' (name, group, tags and config from the experiment,
    the data's index.json as its dataset; its id, step bookkeeping and links in training/wandb_run.py)."""
    loggers: list[Logger] = [JsonlLogger(run.metrics)]
    mode = cfg.logging.mode()
    if mode != "disabled":
        index = find_index(cfg.data)
        loggers.append(build_wandb_logger(cfg.logging, mode, run, cfg.run.name, to_container(cfg), index))
    return loggers


def finish_wandb(loggers: list[Logger]) -> None:
    """Close this process's W&B run after a fit, so a later fit in the same process (a sweep, the demo, tests)
    starts its own run instead of silently reusing this one, and stop W&B's writer process: ``finish`` alone can
    return before the offline run file holds the last records, so a reader right after the fit saw a partial run.
    A fit that Lightning saw fail (an exception, Ctrl-C) leaves its W&B run marked failed, not finished."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        ours = [logger for logger in loggers if isinstance(logger, PicoWandbLogger)]
        for logger in ours:
            logger.print_where()
        wandb.finish(exit_code=1 if any(logger.failed for logger in ours) else None)
        wandb.teardown()
