"""The private attributes of our libraries that pico_lightning relies on, each with why no public API serves.

Everything else uses public APIs; what is here is pinned by setup.cfg (lightning <2.7, diffusers <0.43) and checked
by the tests that cover its callers (tests/test_wandb_run.py, tests/test_seed_scorer.py, tests/test_quantize.py).

- Lightning 2.6's ``WandbLogger`` always passes wandb's ``anonymous`` setting to ``wandb.init`` (None unless asked),
  and wandb 0.31 prints "The anonymous setting has no effect" on every run for it (a ``termwarn``, not a Python
  warning that a filter could silence). The only way to keep it from ``wandb.init`` is the logger's private
  ``_wandb_init`` dict.
- Lightning's ``WandbLogger.experiment`` starts the run on first access; whether it has started is only in its
  private ``_experiment``.
- wandb 0.31's ``Run.use_artifact`` refuses offline runs ("Cannot use artifact when in offline mode"). For an artifact
  built here (a draft), online ``use_artifact`` logs it through the private ``Run._log_artifact`` with
  ``use_after_commit``: the record that makes the service create the version (or find it by its digest) and mark it
  used by the run, never logged by it. Offline runs write that same record to their ``.wandb`` file, and
  ``wandb sync`` sends it through the same code, so the lineage reaches the dashboard in both modes.
- The seed scorer's attention capture (inference/routing.py) must compute FLUX's attention exactly as diffusers 0.42's
  ``FluxAttnProcessor`` does, with the queries and keys in hand. The processor has no hook between projection and
  dispatch, so the capture repeats its body: the module-private ``_get_qkv_projections`` (fused or separate QKV
  projections) and the processor's private ``_attention_backend`` / ``_parallel_config`` (what
  ``set_attention_backend`` chose), passed to ``dispatch_attention_fn``.
- The float8 base (model/float8.py) multiplies with ``torch._scaled_mm``, the op behind torchao's float8 tensors
  (which have no backward through it). torch 2.13's public ``torch.nn.functional.scaled_mm`` (row-wise scaling
  recipes) gives the same bytes on the CPU, but it is new and dispatches to another op (``_scaled_mm_v2``) not yet
  measured on a GPU; the swap is one line here once it is.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
from diffusers.models.transformers.transformer_flux import _get_qkv_projections as flux_qkv_projections
from lightning.pytorch.loggers import WandbLogger

__all__ = [
    "drop_wandb_anonymous",
    "flux_dispatch_settings",
    "flux_qkv_projections",
    "scaled_float8_matmul",
    "use_artifact",
    "wandb_run_started",
]


def drop_wandb_anonymous(logger: WandbLogger) -> None:
    """Keep Lightning's ``anonymous=None`` out of the logger's ``wandb.init`` arguments (no effect, one warning)."""
    logger._wandb_init.pop("anonymous", None)


def wandb_run_started(logger: WandbLogger):
    """The logger's W&B run if it has started (on global rank zero only), else None; never starts one."""
    return logger._experiment


def use_artifact(run, artifact) -> None:
    """Mark ``artifact``, built here and not yet logged, as an input of the W&B ``run``, online or offline."""
    if run.offline:
        run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
    else:
        run.use_artifact(artifact)


def flux_dispatch_settings(processor: FluxAttnProcessor) -> dict:
    """The attention backend and parallel config a FLUX attention processor dispatches with, as
    ``dispatch_attention_fn`` keywords."""
    return {"backend": processor._attention_backend, "parallel_config": processor._parallel_config}


def scaled_float8_matmul(
    a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """``(a * scale_a) @ (b * scale_b)`` for float8 ``a`` (M, K) and ``b`` (K, N) with float32 scales (M, 1) and
    (1, N), in ``out_dtype``: on the float8 matrix units of a GPU that has them."""
    return torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype)
