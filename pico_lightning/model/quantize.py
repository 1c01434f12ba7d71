"""``model.base_quantization``: store the frozen DiT's block Linear weights in 8 bits.

The blocks hold almost all of FLUX.1-Fill's 11.9 B parameters (22.3 GiB in bf16); 8-bit storage halves that, which
is what fits LoRA training at 1024^2 on a 24 GB card. Two kinds:

- ``int8``: torchao's weight-only int8 (per-channel scales). Weights are dequantized on the fly and every matmul
  runs in the activations' dtype, so the base's outputs move only by the weights' rounding. torchao is an optional
  dependency (``pip install .[quant]``), imported only when asked for. Once installed, diffusers imports it by
  itself, and torchao 0.18 on a CPU-only torch logs a few lines at that import ("Failed to load ... .so").
- ``float8``: float8 weights and float8 matmuls with activations quantized per token (model/float8.py, plain torch),
  for GPUs with float8 matrix units.

Quantize before attaching LoRA: peft then wraps each quantized Linear and the LoRA weights stay float32 and trainable.
"""

from __future__ import annotations

import re

from torch import nn

from pico_lightning.errors import UserError
from pico_lightning.model.float8 import Float8FrozenLinear, check_float8_device, float8_compatible

_BLOCK_LINEAR = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.\d+\.")


def quantize_base(transformer: nn.Module, kind: str) -> int:
    """Quantize the Linear weights inside the double and single blocks in place (``kind`` int8 | float8; none is a
    no-op); returns how many layers were quantized."""
    if kind == "none":
        return 0
    names = {name for name, module in transformer.named_modules() if _is_block_linear(name, module)}
    if kind == "float8":
        return _to_float8(transformer, names)
    if kind != "int8":
        raise UserError(f"model.base_quantization: expected none, int8 or float8, got {kind!r}")
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise UserError(f"model.base_quantization={kind} needs torchao: pip install '.[quant]' torch==2.13.0") from None
    quantize_(transformer, Int8WeightOnlyConfig(), filter_fn=lambda module, name: name in names)
    return len(names)


def _to_float8(transformer: nn.Module, names: set[str]) -> int:
    """Swap each named Linear whose sizes ``_scaled_mm`` takes for a :class:`Float8FrozenLinear`."""
    check_float8_device(next(transformer.parameters()).device)
    swapped = 0
    for name in sorted(names):
        parent_name, _, child = name.rpartition(".")
        parent, linear = transformer.get_submodule(parent_name), transformer.get_submodule(name)
        if float8_compatible(linear):
            setattr(parent, child, Float8FrozenLinear(linear))
            swapped += 1
    return swapped


def _is_block_linear(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and _BLOCK_LINEAR.match(name) is not None
