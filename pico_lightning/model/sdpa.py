"""Which fused kernels torch's scaled_dot_product_attention may use: ``train.attention_backend`` -> SDPA backends.

diffusers' FLUX attention goes through ``torch.nn.functional.scaled_dot_product_attention``, which picks among the
enabled backends. torch 2.11 prefers cuDNN's fused attention on Hopper, and its backward fails on the full-size
FLUX.1-Fill DiT (``mha_graph.execute(...).is_good()``, or an illegal memory access that poisons the process), so
``auto`` leaves cuDNN out and lets torch choose among flash, memory-efficient and math.

The choice is applied through torch's process-wide backend flags, not a context around ``training_step``: the
backward pass, and the forward that gradient checkpointing recomputes inside it, run after ``training_step`` has
returned (on CUDA, in the autograd engine's device thread). :func:`attention_backend` sets them around a block;
training/attention_backend.py does it for a whole fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch.nn.attention import SDPBackend

AttentionBackendName = Literal["auto", "flash", "efficient", "cudnn", "math"]

BACKENDS: dict[str, tuple[SDPBackend, ...]] = {
    "auto": (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
    "flash": (SDPBackend.FLASH_ATTENTION,),
    "efficient": (SDPBackend.EFFICIENT_ATTENTION,),
    "cudnn": (SDPBackend.CUDNN_ATTENTION,),
    "math": (SDPBackend.MATH,),
}

_FLAGS = {  # backend -> (is enabled, enable(bool)): torch's global switches, read by CUDA and CPU dispatch alike
    SDPBackend.FLASH_ATTENTION: (torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.enable_flash_sdp),
    SDPBackend.EFFICIENT_ATTENTION: (
        torch.backends.cuda.mem_efficient_sdp_enabled,
        torch.backends.cuda.enable_mem_efficient_sdp,
    ),
    SDPBackend.CUDNN_ATTENTION: (torch.backends.cuda.cudnn_sdp_enabled, torch.backends.cuda.enable_cudnn_sdp),
    SDPBackend.MATH: (torch.backends.cuda.math_sdp_enabled, torch.backends.cuda.enable_math_sdp),
}


def sdpa_backends(name: str) -> tuple[SDPBackend, ...]:
    """The SDPA backends ``name`` allows (``auto``: flash, memory-efficient, math; never cuDNN)."""
    if name not in BACKENDS:
        raise ValueError(f"train.attention_backend: expected one of {list(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


def enabled_backends() -> tuple[SDPBackend, ...]:
    """The backends torch's global flags enable right now."""
    return tuple(backend for backend, (enabled, _) in _FLAGS.items() if enabled())


def set_backends(backends: tuple[SDPBackend, ...]) -> tuple[SDPBackend, ...]:
    """Enable exactly ``backends`` process-wide; returns the previously enabled ones (to restore them)."""
    previous = enabled_backends()
    for backend, (_, enable) in _FLAGS.items():
        enable(backend in backends)
    return previous


@contextmanager
def attention_backend(name: str) -> Iterator[tuple[SDPBackend, ...]]:
    """Allow only ``name``'s backends inside the block (forward and backward alike); restore the flags after."""
    previous = set_backends(sdpa_backends(name))
    try:
        yield sdpa_backends(name)
    finally:
        set_backends(previous)
