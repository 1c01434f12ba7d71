"""The optimizer, its gradient clipping and its learning-rate schedule, each decided in one small function.

AdamW is fused (one kernel over all LoRA tensors) on CUDA. Lightning's mixed-precision plugin refuses to clip the
gradients of a fused optimizer, even under bf16-mixed where no GradScaler exists ("does not allow for gradient
clipping because it performs unscaling of gradients internally"), so PicoModule clips itself, in
``configure_gradient_clipping``, with :func:`clip_gradients` (one foreach norm over the gradients). Under 16-mixed a
GradScaler is in use and a fused optimizer would only unscale inside its ``step``, after clipping had seen scaled
gradients: there AdamW is foreach, and the plugin unscales before the clipping hook runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from diffusers.optimization import get_scheduler
from torch.optim.lr_scheduler import LambdaLR

SCALED_PRECISIONS = ("16-mixed",)  # precisions whose Lightning plugin uses a GradScaler


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    precision: str,
    device_is_cuda: bool,
) -> torch.optim.AdamW:
    """AdamW, fused on CUDA unless a GradScaler is in use (``precision`` 16-mixed), foreach otherwise."""
    fused = device_is_cuda and precision not in SCALED_PRECISIONS
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused, foreach=not fused)


def clip_gradients(
    optimizer: torch.optim.Optimizer, max_norm: float, scaler: torch.amp.GradScaler | None = None
) -> torch.Tensor:
    """Scale the optimizer's gradients to a total L2 norm of at most ``max_norm``; returns the norm before clipping.

    ``scaler`` is the precision plugin's GradScaler, if any: its gradients must already be unscaled, which Lightning
    does only for a non-fused optimizer. Under FSDP2 the gradients are DTensor shards: torch's clipping reduces their
    norm over the ranks, and the norm comes back whole (a plain tensor, the same on every rank).
    """
    from torch.distributed.tensor import DTensor

    if scaler is not None and optimizer.defaults.get("fused"):
        raise ValueError("clip_gradients: a fused optimizer under a GradScaler still holds scaled gradients here")
    grads = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm, foreach=True)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def build_schedule(
    optimizer: torch.optim.Optimizer,
    schedule: Literal["constant", "cosine"],
    warmup_steps: int,
    max_steps: int,
) -> LambdaLR:
    """diffusers' schedules, stepped once per optimizer step: linear warm-up from 0 over ``warmup_steps``, then
    constant, or a cosine decay reaching 0 at ``max_steps``."""
    name = {"constant": "constant_with_warmup", "cosine": "cosine"}[schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max_steps)
