"""``train.compile``: regional torch.compile of the DiT, one compiled graph per repeated block type.

FLUX's 19 double and 38 single blocks are two block classes repeated; compiling each block's forward, as
diffusers' ``compile_repeated_blocks`` does (double and single: two graphs, reused by every instance), instead of
the whole model, so compilation takes seconds-to-a-minute instead of many minutes and gradient checkpointing,
peft's LoRA layers and the attention-capture processors keep working around it. Apply after LoRA is attached (the
blocks' graphs include the LoRA branches) and after gradient checkpointing is switched on.
"""

from __future__ import annotations

import torch

from pico_lightning.model.backbone import dit_blocks


def compile_blocks(transformer: torch.nn.Module, backend: str = "inductor") -> int:
    """Compile every repeated block of ``transformer`` in place (lazily, at its first call); returns how many.

    What diffusers' ``compile_repeated_blocks`` does for FLUX (``Module.compile`` on each block of the two
    repeated classes), written out so the count needs no private attribute of torch or diffusers."""
    blocks = dit_blocks(transformer)
    for block in blocks:
        block.compile(backend=backend)
    return len(blocks)
