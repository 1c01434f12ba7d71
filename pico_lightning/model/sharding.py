"""FSDP2 for the Fill DiT (``train.strategy=fsdp``): each repeated block its own unit, then the rest of the model.

``fully_shard`` turns every parameter into a DTensor sharded over the mesh, one parameter at a time, so the frozen
base (bf16) and the float32 LoRA weights need no common dtype or flat buffer. Each block gathers its parameters just
before its forward (and its backward) and frees them after, so a rank holds 1/world of the base plus one block at a
time. Shard after LoRA and checkpointing are in place and before compiling the blocks.
"""

from __future__ import annotations

from torch import nn

from pico_lightning.model.backbone import dit_blocks


def shard_transformer(transformer: nn.Module, mesh) -> int:
    """Shard ``transformer`` in place over ``mesh`` (a 1-D DeviceMesh): its blocks, then the root; returns how many
    blocks."""
    from torch.distributed.fsdp import fully_shard

    blocks = dit_blocks(transformer)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    # the root too reshards after its forward (FSDP2 keeps a root's parameters gathered for the backward by default):
    # an evaluation forward has no backward, and gathered parameters left in place are not the optimizer's
    fully_shard(transformer, mesh=mesh, reshard_after_forward=True)
    return len(blocks)
