"""The private attributes of our libraries that pico_lightning relies on, each with why no public API serves.

Everything else uses public APIs; what is here is pinned by setup.cfg (lightning <2.7, diffusers <0.43) and checked
by the tests that cover its callers (tests/test_wandb_run.py).

- Lightning 2.6's ``WandbLogger`` always passes wandb's ``anonymous`` setting to ``wandb.init`` (None unless asked),
  and wandb 0.31 prints "The anonymous setting has no effect" on every run for it (a ``termwarn``, not a Python
  warning that a filter could silence). The only way to keep it from ``wandb.init`` is the logger's private
  ``_wandb_init`` dict.
- Lightning's ``WandbLogger.experiment`` starts the run on first access; whether it has started is only in its
  private ``_experiment``.
"""

from __future__ import annotations

from lightning.pytorch.loggers import WandbLogger


def drop_wandb_anonymous(logger: WandbLogger) -> None:
    """Keep Lightning's ``anonymous=None`` out of the logger's ``wandb.init`` arguments (no effect, one warning)."""
    logger._wandb_init.pop("anonymous", None)


def wandb_run_started(logger: WandbLogger):
    """The logger's W&B run if it has started (on global rank zero only), else None; never starts one."""
    return logger._experiment
