"""``train.gradient_checkpointing``: every DiT block, none, or ``auto``, the fewest blocks whose recompute lets the
rest of the fit's activations fit in memory.

``auto`` measures before the fit, at the training shape. One probe forward goes through diffusers' own
checkpointing hook (``enable_gradient_checkpointing(gradient_checkpointing_func=...)``): the last block of each
kind (FLUX's double-stream and single-stream blocks) runs under saved-tensor hooks that count the bytes autograd
keeps for its backward; every other block runs without gradients, its outputs marked as needing them, so that what
follows keeps what it would in training. Blocks of one kind share one shape, so one
measurement prices them all. Eager bytes: a compiled block keeps no more (inductor recomputes cheap ops), so the plan
errs on the safe side.

The budget is ``train.memory_budget_gb``, else the device's free memory with the base loaded (a CPU has no budget:
nothing is checkpointed). From it are kept back the optimizer's state and gradients (12 bytes per trainable
parameter: AdamW's two moments and the gradient, float32), the bytes the rest of the forward keeps, the recompute of
the largest block in the backward pass, and 5 % for the allocator. Blocks are checkpointed largest saving first
until the rest fits: the fewest that do. Every rank plans for its own device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from pico_lightning.model.backbone import dit_blocks

log = logging.getLogger(__name__)

OPTIMIZER_BYTES_PER_PARAM = 12  # float32 gradient + AdamW's exp_avg and exp_avg_sq
ALLOCATOR_SHARE = 0.05


@dataclass(frozen=True)
class BlockCost:
    """Bytes one block holds for the backward pass: all it saves when it runs plainly, its inputs when checkpointed."""

    kept: int
    inputs: int

    @property
    def saving(self) -> int:
        return self.kept - self.inputs


@dataclass(frozen=True)
class CheckpointPlan:
    """Which blocks recompute in the backward pass, and the sums that chose them (bytes)."""

    checkpointed: tuple[int, ...]  # indices into :func:`~pico_lightning.model.backbone.dit_blocks`
    total: int
    need: int  # what the blocks keep for backward under this plan
    room: int  # what the budget leaves the blocks

    def describe(self) -> str:
        fits = "" if self.need <= self.room else " (does not fit even so: lower the batch or the panel size)"
        return (
            f"gradient checkpointing (auto): {len(self.checkpointed)} of {self.total} DiT blocks; their activations "
            f"take {self.need / 2**30:.2f} GiB of {max(self.room, 0) / 2**30:.2f} GiB left for them{fits}"
        )


def checkpoint_all(transformer: nn.Module) -> None:
    """Recompute every block (diffusers' own switch)."""
    transformer.enable_gradient_checkpointing()


def checkpoint_selected(transformer: nn.Module, selected: tuple[int, ...]) -> None:
    """Recompute the blocks at ``selected`` (indices into ``dit_blocks``), run the others as they are."""
    if not selected:
        return
    chosen = {id(block) for i, block in enumerate(dit_blocks(transformer)) if i in selected}

    def run(block: nn.Module, *args):
        if id(block) in chosen:
            return torch.utils.checkpoint.checkpoint(block.__call__, *args, use_reentrant=False)
        return block(*args)

    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=run)


def plan_checkpointing(
    transformer: nn.Module, forward: Callable[[], object], budget: int, trainable_params: int
) -> CheckpointPlan:
    """Measure one ``forward()`` (the training step's DiT call at its shape, in its precision) and choose the fewest
    blocks to checkpoint so that what the fit keeps fits in ``budget`` bytes."""
    costs, rest = measure(transformer, forward)
    kinds = [costs[type(block)] for block in dit_blocks(transformer)]
    reserve = trainable_params * OPTIMIZER_BYTES_PER_PARAM + rest + max(c.kept for c in kinds)
    room = int(budget * (1 - ALLOCATOR_SHARE)) - reserve
    need, chosen = sum(c.kept for c in kinds), []
    for index in sorted(range(len(kinds)), key=lambda i: -kinds[i].saving):  # stable: earlier blocks first
        if need <= room:
            break
        chosen.append(index)
        need -= kinds[index].saving
    return CheckpointPlan(tuple(sorted(chosen)), len(kinds), need, room)


def measure(transformer: nn.Module, forward: Callable[[], object]) -> tuple[dict[type, BlockCost], int]:
    """(cost of one block per block class, bytes the rest of the forward keeps) from one probe ``forward()``."""
    weights = {id(p) for p in transformer.parameters()}
    measured = {type(block): block for block in dit_blocks(transformer)}  # the last of each kind: its inputs need grads
    costs: dict[type, BlockCost] = {}

    def probe(block: nn.Module, *args):
        if measured[type(block)] is not block:
            with torch.no_grad():
                outputs = block(*args)
            return tuple(t.requires_grad_() for t in outputs)  # what follows keeps what it would in training
        with saved_bytes(weights) as kept:
            outputs = block(*args)
        costs[type(block)] = BlockCost(kept(), tensor_bytes(args))
        return outputs

    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=probe)
    try:
        with saved_bytes(weights) as rest:  # the blocks' own hooks take over inside them
            forward()
    finally:
        transformer.disable_gradient_checkpointing()
    return costs, rest()


@contextmanager
def saved_bytes(skip: set[int]) -> Iterator[Callable[[], int]]:
    """Count the distinct storages autograd saves for backward inside the block, except tensors in ``skip`` (ids:
    the weights, resident anyway). Yields a function returning the count so far."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in skip:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield lambda: sum(seen.values())


def tensor_bytes(values) -> int:
    """Bytes of the tensors in ``values`` (nested tuples and lists included)."""
    if isinstance(values, torch.Tensor):
        return values.nbytes
    if isinstance(values, tuple | list):
        return sum(tensor_bytes(v) for v in values)
    return 0


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now; None on a CPU (host memory is not what auto plans for)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return None
