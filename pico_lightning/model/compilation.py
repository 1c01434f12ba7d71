"""``train.compile``: regional torch.compile of the DiT, one compiled graph per repeated block type.

FLUX's 19 double and 38 single blocks are two block classes repeated; diffusers' ``compile_repeated_blocks``
compiles each block's forward (double and single: two graphs, reused by every instance) instead of the whole
model, so compilation takes seconds-to-a-minute instead of many minutes and gradient checkpointing, peft's LoRA
layers and the attention-capture processors keep working around it. Apply after LoRA is attached (the blocks'
graphs include the LoRA branches) and after gradient checkpointing is switched on.
"""

from __future__ import annotations

import torch


def compile_blocks(transformer: torch.nn.Module, backend: str = "inductor") -> int:
    """Compile every repeated block of ``transformer`` in place (lazily, at its first call); returns how many."""
    transformer.compile_repeated_blocks(backend=backend)
    return sum(1 for m in transformer.modules() if getattr(m, "_compiled_call_impl", None) is not None)
