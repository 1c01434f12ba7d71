"""The private attributes of our libraries that pico_lightning relies on, each with why no public API serves.

Everything else uses public APIs; what is here is pinned by setup.cfg (lightning <2.7, diffusers <0.43) and checked
by the tests that cover its callers (tests/test_wandb_run.py, tests/test_seed_scorer.py).

- Lightning 2.6's ``WandbLogger`` always passes wandb's ``anonymous`` setting to ``wandb.init`` (None unless asked),
  and wandb 0.31 prints "The anonymous setting has no effect" on every run for it (a ``termwarn``, not a Python
  warning that a filter could silence). The only way to keep it from ``wandb.init`` is the logger's private
  ``_wandb_init`` dict.
- Lightning's ``WandbLogger.experiment`` starts the run on first access; whether it has started is only in its
  private ``_experiment``.
- The seed scorer's attention capture (inference/routing.py) must compute FLUX's attention exactly as diffusers 0.42's
  ``FluxAttnProcessor`` does, with the queries and keys in hand. The processor has no hook between projection and
  dispatch, so the capture repeats its body: the module-private ``_get_qkv_projections`` (fused or separate QKV
  projections) and the processor's private ``_attention_backend`` / ``_parallel_config`` (what
  ``set_attention_backend`` chose), passed to ``dispatch_attention_fn``.
"""

from __future__ import annotations

from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
from diffusers.models.transformers.transformer_flux import _get_qkv_projections as flux_qkv_projections
from lightning.pytorch.loggers import WandbLogger

__all__ = ["drop_wandb_anonymous", "flux_dispatch_settings", "flux_qkv_projections", "wandb_run_started"]


def drop_wandb_anonymous(logger: WandbLogger) -> None:
    """Keep Lightning's ``anonymous=None`` out of the logger's ``wandb.init`` arguments (no effect, one warning)."""
    logger._wandb_init.pop("anonymous", None)


def wandb_run_started(logger: WandbLogger):
    """The logger's W&B run if it has started (on global rank zero only), else None; never starts one."""
    return logger._experiment


def flux_dispatch_settings(processor: FluxAttnProcessor) -> dict:
    """The attention backend and parallel config a FLUX attention processor dispatches with, as
    ``dispatch_attention_fn`` keywords."""
    return {"backend": processor._attention_backend, "parallel_config": processor._parallel_config}
