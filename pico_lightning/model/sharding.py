"""FSDP2 for the Fill DiT (``train.strategy=fsdp``): each repeated block its own unit, then the rest of the model.

``fully_shard`` turns every parameter into a DTensor sharded over the mesh, one parameter at a time, so the frozen
base (bf16) and the float32 LoRA weights need no common dtype or flat buffer. Each block gathers its parameters just
before its forward (and its backward) and frees them after, so a rank holds 1/world of the base plus one block at a
time. Shard after LoRA and checkpointing are in place and before compiling the blocks.
"""

from __future__ import annotations

import warnings

from torch import nn

from pico_lightning.model.backbone import dit_blocks


def shard_transformer(transformer: nn.Module, mesh) -> int:
    """Shard ``transformer`` in place over ``mesh`` (a 1-D DeviceMesh): its blocks, then the root; returns how many
    blocks."""
    from torch.distributed.fsdp import fully_shard

    # FLUX's single block returns its text and image tokens as two views of one tensor. FSDP2 warns that an in-place
    # op on such a view would skip its pre-backward gather; diffusers' FluxTransformer2DModel only reads them out of
    # place, and tests/test_fsdp.py checks that FSDP's losses and LoRA equal DDP's.
    view_warning = r"FSDP2-wrapped module \(FSDPFluxSingleTransformerBlock\) returned a view"
    warnings.filterwarnings("ignore", message=view_warning)
    blocks = dit_blocks(transformer)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    # the root too reshards after its forward (FSDP2 keeps a root's parameters gathered for the backward by default):
    # an evaluation forward has no backward, and gathered parameters left in place are not the optimizer's
    fully_shard(transformer, mesh=mesh, reshard_after_forward=True)
    return len(blocks)
