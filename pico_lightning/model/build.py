"""The model a fit trains, built in one function: the frozen base, then each of the fit's levers, in the one order
that works.

    parts, plan = build_trainable(cfg.model, cfg.train, cfg.lora, device)    # PicoModule.configure_model's call

1. the base (model/backbone.py): loaded from ``model.pretrained_dir`` or the in-process preset, built on ``device``
   in its storage dtype, frozen;
2. ``model.base_quantization`` (model/quantize.py), before LoRA: peft then wraps the 8-bit layers;
3. the adapter (model/lora.py): a fresh LoRA whose init is seeded by ``train.seed`` (every rank and every run start
   alike), or a diffusers-format LoRA from a path; with neither, the base stays bare;
4. ``train.gradient_checkpointing`` (model/checkpointing.py): every block, or ``auto``'s plan, measured on one
   training step's DiT call at the fit's shape with the adapter in place (the ``probe``, e.g.
   :class:`~pico_lightning.objective.StepProbe`);
5. FSDP2 (model/sharding.py) over ``mesh``, when the strategy gives one (``train.strategy=fsdp``);
6. ``train.compile`` (model/compilation.py), last: the compiled blocks include LoRA, checkpointing and sharding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from pico_lightning.config import LoraConfig, ModelConfig, TrainConfig
from pico_lightning.model.backbone import FluxParts, build_parts
from pico_lightning.model.checkpointing import (
    CheckpointPlan,
    checkpoint_all,
    checkpoint_selected,
    free_memory,
    plan_checkpointing,
)
from pico_lightning.model.compilation import compile_blocks
from pico_lightning.model.lora import add_lora, load_lora
from pico_lightning.model.quantize import quantize_base
from pico_lightning.model.sharding import shard_transformer

log = logging.getLogger(__name__)

Probe = Callable[[FluxParts], Callable[[], object]]
"""Built parts -> the training step's DiT call at the fit's shape and precision, which ``auto`` measures."""


def build_trainable(
    model: ModelConfig,
    train: TrainConfig,
    lora: LoraConfig | str | None,
    device: torch.device | str | None = None,
    mesh=None,
    probe: Probe | None = None,
    rank: int = 0,
) -> tuple[FluxParts, CheckpointPlan | None]:
    """The base with its adapter on ``device``, ready for the fit ``train`` describes, and the blocks ``auto``
    checkpointing chose (None unless it planned). ``lora``: a LoraConfig attaches a fresh adapter, a path loads a
    diffusers-format one, None keeps the bare base. ``mesh``: the 1-D DeviceMesh to shard over (FSDP2). ``probe``:
    what ``train.gradient_checkpointing=auto`` measures (needed when it has a budget); ``rank``: the global rank
    (rank zero prints the plan)."""
    parts = build_parts(model, device=device)
    quantize_base(parts.transformer, model.base_quantization)  # before LoRA: peft wraps the 8-bit layers
    if isinstance(lora, LoraConfig):
        add_lora(parts.transformer, lora, seed=train.seed)
    elif lora:
        load_lora(parts.transformer, lora)
    plan = None
    if train.gradient_checkpointing == "auto":
        plan = checkpoint_what_memory_needs(parts, train.memory_budget_gb, probe, rank)
    elif train.gradient_checkpointing:
        checkpoint_all(parts.transformer)
    if mesh is not None:
        shard_transformer(parts.transformer, mesh)
    if train.compile:
        compile_blocks(parts.transformer)  # after LoRA, checkpointing, sharding: the compiled blocks include them
    return parts, plan


def checkpoint_what_memory_needs(
    parts: FluxParts, budget_gb: float | None, probe: Probe | None, rank: int = 0
) -> CheckpointPlan | None:
    """``train.gradient_checkpointing: auto``: plan from one run of the probed step against the memory budget
    (``budget_gb`` GiB, else the device's free memory), and checkpoint the chosen blocks; None, with nothing
    checkpointed, where there is no budget (a CPU without ``train.memory_budget_gb``)."""
    device = next(parts.transformer.parameters()).device
    budget = int(budget_gb * 2**30) if budget_gb is not None else free_memory(device)
    if budget is None:
        return None
    if probe is None:
        raise ValueError("train.gradient_checkpointing=auto probes a training step: build with a probe")
    trainable = sum(p.numel() for p in parts.transformer.parameters() if p.requires_grad)
    plan = plan_checkpointing(parts.transformer, probe(parts), budget, trainable)
    if plan.need > plan.room:
        log.warning(plan.describe())
    elif rank == 0:
        print(plan.describe(), flush=True)  # the job log says what auto chose (each rank plans its own device)
    checkpoint_selected(parts.transformer, plan.checkpointed)
    return plan
