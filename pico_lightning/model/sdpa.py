"""Which fused kernels torch's scaled_dot_product_attention may use: ``train.attention_backend`` -> SDPA backends.

diffusers' FLUX attention goes through ``torch.nn.functional.scaled_dot_product_attention``, which picks among the
enabled backends. torch 2.11 prefers cuDNN's fused attention on Hopper, and its backward fails on the full-size
FLUX.1-Fill DiT (``mha_graph.execute(...).is_good()``, or an illegal memory access that poisons the process), so
``auto`` leaves cuDNN out and lets torch choose among flash, memory-efficient and math.

``fa3`` and ``fa4`` allow only the flash backend and swap its CUDA kernels (FlashAttention-2 in torch's own build)
for FlashAttention-3 (compute capability 9.x, Hopper) or FlashAttention-4 (9.x or 10.x, Hopper or datacenter
Blackwell) through torch's registry (``torch.nn.attention.activate_flash_attention_impl``). Both run forward and
backward in bf16/fp16 without dropout; the kernels come from separate packages, imported only on activation.

The choice is applied through torch's process-wide backend flags (``torch.nn.attention.sdpa_kernel`` sets them),
not a context around ``training_step``: the backward pass, and the forward that gradient checkpointing recomputes
inside it, run after ``training_step`` has returned (on CUDA, in the autograd engine's device thread).
:func:`attention_backend` sets them around a block; training/attention_backend.py holds it open for a whole fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch.nn.attention import (
    SDPBackend,
    activate_flash_attention_impl,
    current_flash_attention_impl,
    restore_flash_attention_impl,
    sdpa_kernel,
)

from pico_lightning.errors import UserError

BACKENDS: dict[str, tuple[SDPBackend, ...]] = {
    "auto": (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH),
    "flash": (SDPBackend.FLASH_ATTENTION,),
    "efficient": (SDPBackend.EFFICIENT_ATTENTION,),
    "cudnn": (SDPBackend.CUDNN_ATTENTION,),
    "math": (SDPBackend.MATH,),
    "fa3": (SDPBackend.FLASH_ATTENTION,),
    "fa4": (SDPBackend.FLASH_ATTENTION,),
}
_ENABLED = {  # backend -> is it enabled now: torch's global switches, read by CUDA and CPU dispatch alike
    SDPBackend.FLASH_ATTENTION: torch.backends.cuda.flash_sdp_enabled,
    SDPBackend.EFFICIENT_ATTENTION: torch.backends.cuda.mem_efficient_sdp_enabled,
    SDPBackend.CUDNN_ATTENTION: torch.backends.cuda.cudnn_sdp_enabled,
    SDPBackend.MATH: torch.backends.cuda.math_sdp_enabled,
}


class FlashImpl(NamedTuple):
    """One of torch's registered flash-backend implementations (torch/nn/attention/_fa3.py, _fa4.py)."""

    impl: str  # its name in torch's registry
    title: str
    package: str  # the module torch imports on activation, and where it comes from
    capabilities: tuple[int, ...]  # major compute capabilities torch lets it run on (it raises at the first call)


FLASH_IMPLS = {
    "fa3": FlashImpl(
        "FA3",
        "FlashAttention-3",
        "the `flash_attn_interface` module, built from flash-attention's hopper/ directory",
        (9,),
    ),
    "fa4": FlashImpl(
        "FA4", "FlashAttention-4", "the `flash_attn.cute.interface` module: pip install --pre flash-attn-4", (9, 10)
    ),
}


def sdpa_backends(name: str) -> tuple[SDPBackend, ...]:
    """The SDPA backends ``name`` allows (``auto``: flash, memory-efficient, math; never cuDNN)."""
    if name not in BACKENDS:
        raise ValueError(f"train.attention_backend: expected one of {list(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


def enabled_backends() -> tuple[SDPBackend, ...]:
    """The backends torch's global flags enable right now."""
    return tuple(backend for backend, enabled in _ENABLED.items() if enabled())


def check_device(name: str, device: torch.device) -> None:
    """UserError when ``name`` is a FlashAttention kernel that ``device`` cannot run: said before the model is
    built, not at the first attention call (where torch raises, or a CPU run would quietly use its own flash)."""
    if name not in FLASH_IMPLS:
        return
    flash = FLASH_IMPLS[name]
    if device.type != "cuda":
        raise UserError(
            f"train.attention_backend={name}: {flash.title} runs on CUDA GPUs only; this fit is on {device}"
        )
    major, minor = torch.cuda.get_device_capability(device)
    if major not in flash.capabilities:
        wanted = " or ".join(f"{c}.x" for c in flash.capabilities)
        raise UserError(
            f"train.attention_backend={name}: {flash.title} runs on compute capability {wanted}; {device} is "
            f"{major}.{minor} (flash or auto run there)"
        )


@contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Allow only ``name``'s backends inside the block (forward and backward alike), and for ``fa3``/``fa4`` route
    the flash backend to that implementation; restore the flags and the previous implementation after.

    torch's ``sdpa_kernel`` sets the process-wide flags on entry and restores the previous ones on exit.
    """
    with sdpa_kernel(list(sdpa_backends(name))):
        if name not in FLASH_IMPLS:
            yield
            return
        previous = current_flash_attention_impl()
        try:
            _activate(name)
            yield
        finally:
            _reinstate(previous)


def _activate(name: str) -> None:
    flash = FLASH_IMPLS[name]
    try:
        activate_flash_attention_impl(flash.impl)
    except (ImportError, RuntimeError) as err:  # the package is missing, or does not expose the kernels
        raise UserError(
            f"train.attention_backend={name} needs {flash.title} ({flash.package}) on a CUDA GPU; not importable "
            f"here: {err}"
        ) from None


def _reinstate(previous: str | None) -> None:
    """Make ``previous`` the active flash implementation again (torch holds one at a time, not a stack)."""
    if previous is not None:
        activate_flash_attention_impl(previous)
    elif current_flash_attention_impl() is not None:
        restore_flash_attention_impl()
