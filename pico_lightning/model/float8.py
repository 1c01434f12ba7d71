"""``model.base_quantization=float8``: the frozen DiT's block Linears in float8, with float8 matmuls in the forward.

Each Linear keeps its weight as float8 e4m3 with one float32 scale per output row (half the bf16 bytes, as int8
does). Its forward quantizes the activations on the fly, one scale per token row, and multiplies with
``torch._scaled_mm`` (a private op, so called through compat.py): on Hopper, Ada and Blackwell that runs on the
float8 matrix units, at twice the bf16 rate, instead of dequantizing every weight first (what a weight-only base
does, in forward, backward and recompute).

LoRA training needs the gradient of the input only, never of the frozen weight, so the backward is one matmul of
the row-scaled output gradient with the float8 weight read as the gradient's dtype (``_scaled_mm`` cannot take the
weight transposed with per-row scales). torchao's float8 tensors have no backward for ``_scaled_mm``, and its
float8 training keeps bf16 master weights, so neither serves a frozen 8-bit base under LoRA; this module is the
small piece between.

Layers whose sizes are not multiples of 16 (what ``_scaled_mm`` needs on a GPU) stay as they are. The weight's
float8 dtype would make peft build the LoRA in float8: ``compute_dtype`` (the layer's original dtype) is the
attribute peft reads instead, as for bitsandbytes layers; ``add_lora`` then keeps LoRA in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from pico_lightning.compat import scaled_float8_matmul
from pico_lightning.errors import UserError

FLOAT8 = torch.float8_e4m3fn
_FLOAT8_MAX = torch.finfo(FLOAT8).max  # 448
_TINY = 1e-12  # the scale of an all-zero row: any positive value keeps it zero


def quantize_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) -> (M, K) float8 and (M, 1) float32 scales with ``values ~= float8 * scale`` row by row."""
    scale = values.abs().amax(dim=-1, keepdim=True).float().clamp(min=_TINY) / _FLOAT8_MAX
    return (values.float() / scale).clamp(-_FLOAT8_MAX, _FLOAT8_MAX).to(FLOAT8), scale


class _Float8Matmul(torch.autograd.Function):
    """``x @ W.T`` for a frozen float8 ``W`` (out, in) with per-row ``scale`` (1, out): float8 forward, input
    gradient only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, out_dtype: torch.dtype):
        ctx.save_for_backward(weight, scale)
        ctx.x_dtype = x.dtype
        rows, row_scale = quantize_rows(x.reshape(-1, x.shape[-1]))
        out = scaled_float8_matmul(rows, weight.t(), row_scale, scale, torch.bfloat16)
        return out.reshape(*x.shape[:-1], weight.shape[0]).to(out_dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, scale = ctx.saved_tensors
        grad_x = (grad * scale.to(grad.dtype)) @ weight.to(grad.dtype)
        return grad_x.to(ctx.x_dtype), None, None, None


class Float8FrozenLinear(nn.Linear):
    """A frozen Linear stored in float8 that multiplies in float8 (an ``nn.Linear``, so peft wraps it as one)."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = linear.weight.dtype  # peft's LoRA dtype and the output dtype outside autocast
        weight, scale = quantize_rows(linear.weight.detach())
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.register_buffer("weight_scale", scale.reshape(1, -1))  # (1, out): _scaled_mm's layout for b's scales
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.compute_dtype
        out = _Float8Matmul.apply(x, self.weight, self.weight_scale, dtype)
        return out if self.bias is None else out + self.bias.to(dtype)


def float8_compatible(linear: nn.Linear) -> bool:
    """Whether ``_scaled_mm`` takes this layer's sizes on every device (multiples of 16)."""
    return linear.in_features % 16 == 0 and linear.out_features % 16 == 0


def check_float8_device(device: torch.device) -> None:
    """Raise unless ``device`` multiplies float8: a CPU (slowly, for tests) or a CUDA GPU of compute capability
    8.9 or more (Ada, Hopper, Blackwell)."""
    if device.type == "cuda" and (capability := torch.cuda.get_device_capability(device)) < (8, 9):
        major, minor = capability
        raise UserError(
            f"model.base_quantization=float8 needs float8 matrix units (CUDA compute capability 8.9 or more); "
            f"{torch.cuda.get_device_name(device)} has {major}.{minor}: use model.base_quantization=int8"
        )
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"model.base_quantization=float8: expected a CUDA GPU or the CPU, got {device.type}")
