"""Which fused kernels torch's scaled_dot_product_attention may use: ``train.attention_backend`` -> SDPA backends.

diffusers' FLUX attention goes through ``torch.nn.functional.scaled_dot_product_attention``, which picks among the
enabled backends. torch 2.11 prefers cuDNN's fused attention on Hopper, and its backward fails on the full-size
FLUX.1-Fill DiT (``mha_graph.execute(...).is_good()``, or an illegal memory access that poisons the process), so
``auto`` leaves cuDNN out and lets torch choose among flash, memory-efficient and math.

The choice is applied through torch's process-wide backend flags (``torch.nn.attention.sdpa_kernel`` sets them),
not a context around ``training_step``: the backward pass, and the forward that gradient checkpointing recomputes
inside it, run after ``training_step`` has returned (on CUDA, in the autograd engine's device thread).
:func:`attention_backend` sets them around a block; training/attention_backend.py holds it open for a whole fit.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Literal

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

AttentionBackendName = Literal["auto", "flash", "efficient", "cudnn", "math"]

BACKENDS: dict[str, tuple[SDPBackend, ...]] = {
    "auto": (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
    "flash": (SDPBackend.FLASH_ATTENTION,),
    "efficient": (SDPBackend.EFFICIENT_ATTENTION,),
    "cudnn": (SDPBackend.CUDNN_ATTENTION,),
    "math": (SDPBackend.MATH,),
}
_ENABLED = {  # backend -> is it enabled now: torch's global switches, read by CUDA and CPU dispatch alike
    SDPBackend.FLASH_ATTENTION: torch.backends.cuda.flash_sdp_enabled,
    SDPBackend.EFFICIENT_ATTENTION: torch.backends.cuda.mem_efficient_sdp_enabled,
    SDPBackend.CUDNN_ATTENTION: torch.backends.cuda.cudnn_sdp_enabled,
    SDPBackend.MATH: torch.backends.cuda.math_sdp_enabled,
}


def sdpa_backends(name: str) -> tuple[SDPBackend, ...]:
    """The SDPA backends ``name`` allows (``auto``: flash, memory-efficient, math; never cuDNN)."""
    if name not in BACKENDS:
        raise ValueError(f"train.attention_backend: expected one of {list(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


def enabled_backends() -> tuple[SDPBackend, ...]:
    """The backends torch's global flags enable right now."""
    return tuple(backend for backend, enabled in _ENABLED.items() if enabled())


def attention_backend(name: str) -> AbstractContextManager:
    """Allow only ``name``'s backends inside the block (forward and backward alike); restore the flags after.

    torch's ``sdpa_kernel`` sets the process-wide flags on entry and restores the previous ones on exit.
    """
    return sdpa_kernel(list(sdpa_backends(name)))
