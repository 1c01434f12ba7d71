"""The Lightning strategy for ``train.strategy``: DDP and friends by name; FSDP2 for a frozen base + LoRA.

``fsdp`` is torch's FSDP2 (``fully_shard``) through Lightning's ``ModelParallelStrategy``, one data-parallel mesh
dimension over every rank. PicoModule shards each double and single DiT block as its own unit, then the rest of the
transformer (model/sharding.py), after LoRA is attached: FSDP2 shards parameter by parameter, so the frozen bf16
base and the float32 LoRA weights live side by side without flattening. It also runs on CPU ranks (gloo), which is
how the tests train, checkpoint, resume and export under it.

Checkpoints and the exported LoRA need the trainable parameters only. :class:`LoraFSDP` gathers just those (each
``full_tensor`` is a collective that every rank enters), where Lightning's default would gather the whole 12 B
parameter base onto rank zero's host at every checkpoint; the optimizer state covers only LoRA parameters anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy, Strategy

from pico_lightning.config import TrainConfig


class LoraFSDP(ModelParallelStrategy):
    """FSDP2 over all ranks, with checkpoints of the trainable parameters (gathered whole, one file)."""

    def __init__(self, world_size: int):
        super().__init__(data_parallel_size=world_size, tensor_parallel_size=1, save_distributed_checkpoint=False)

    @contextmanager
    def tensor_init_context(self, empty_init: bool | None = None) -> Iterator[None]:
        """Build the base on this rank's device, as the other strategies do (Lightning's FSDP2 context builds on the
        CPU): it never passes through host memory, and ``fully_shard`` then keeps this rank's shard of it there."""
        with torch.device(self.root_device), super().tensor_init_context(empty_init):
            yield

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's load into the sharded module and optimizer, which consumes the checkpoint's ``state_dict``;
        it is put back for PicoModule.on_load_checkpoint, which checks that the LoRA fits this model."""
        path = Path(self.broadcast(checkpoint_path))
        trainable = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]  # the LoRA: small
        checkpoint = super().load_checkpoint(path, weights_only)
        return {**checkpoint, "state_dict": trainable}

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The trainable parameters, whole, on the CPU (every rank calls it: the gathers are collectives)."""
        module = self.lightning_module
        return {name: full_tensor(p).cpu() for name, p in module.named_parameters() if p.requires_grad}


def full_tensor(param: torch.Tensor) -> torch.Tensor:
    """A parameter's whole value: FSDP2 holds shards as DTensors, gathered here; a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return param.full_tensor().detach() if isinstance(param, DTensor) else param.detach()


def build_strategy(cfg: TrainConfig) -> Strategy | str:
    """``train.strategy`` as the Trainer takes it."""
    if cfg.strategy != "fsdp":
        return cfg.strategy
    return LoraFSDP(cfg.world_size())
