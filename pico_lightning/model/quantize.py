"""``model.base_quantization``: store the frozen DiT's block Linear weights in 8 bits (torchao, weight-only).

The blocks hold almost all of FLUX.1-Fill's 11.9 B parameters (22.3 GiB in bf16); int8 or float8 storage halves
that, which is what fits LoRA training at 1024^2 on a 24 GB card. Weights are dequantized on the fly and every
matmul runs in the activations' dtype, so the base's outputs move only by the weights' rounding (per-channel
scales). Quantize before attaching LoRA: peft then wraps each quantized Linear (``TorchaoLoraLinear``) and the LoRA
weights stay float32 and trainable. torchao is an optional dependency (``pip install .[quant]``), imported only
when quantization is asked for. Once installed, diffusers imports it by itself, and torchao 0.18 on a CPU-only torch
logs a few lines at that import ("Failed to load ... .so", "Unable to import torchao Tensor objects").
"""

from __future__ import annotations

import re

from torch import nn

from pico_lightning.errors import UserError

_BLOCK_LINEAR = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.\d+\.")


def quantize_base(transformer: nn.Module, kind: str) -> int:
    """Quantize the Linear weights inside the double and single blocks in place (``kind`` int8 | float8; none is a
    no-op); returns how many layers were quantized."""
    if kind == "none":
        return 0
    try:
        from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise UserError(f"model.base_quantization={kind} needs torchao: pip install '.[quant]' torch==2.13.0") from None
    configs = {"int8": Int8WeightOnlyConfig, "float8": Float8WeightOnlyConfig}
    if kind not in configs:
        raise UserError(f"model.base_quantization: expected none, int8 or float8, got {kind!r}")
    names = {name for name, module in transformer.named_modules() if _is_block_linear(name, module)}
    quantize_(transformer, configs[kind](), filter_fn=lambda module, name: name in names)
    return len(names)


def _is_block_linear(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and _BLOCK_LINEAR.match(name) is not None
