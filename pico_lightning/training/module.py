"""PicoModule: the LightningModule that LoRA-tunes the Fill DiT on grid episodes and evaluates it as validation.

It receives config slices and the prompt-embedding table, and builds the frozen base + LoRA in
:meth:`configure_model`, i.e. inside the strategy's init context (on the device, sharded under FSDP), never as a
full host copy per rank. The flow maths lives in flow.py, the Fill conditioning in model/conditioning.py, the
seed-scored evaluation in evaluation/evaluator.py. Noise and timesteps come from a generator seeded by
(train.seed, global step, rank), so a resumed run draws exactly what an uninterrupted one would. Checkpoints hold
only the trainable (LoRA) parameters, the optimizer, the scheduler and the loop state. The module satisfies
:class:`~pico_lightning.inference.fill_model.FillModel` (``parts``, ``device``, ``text``).

    module = PicoModule(cfg.model, cfg.train, prompts, lora=cfg.lora)   # see training/train.py for the whole wiring
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractContextManager, nullcontext

import lightning.pytorch as pl
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from lightning.pytorch.plugins.precision import MixedPrecision

from pico_lightning.config import EvalConfig, LoraConfig, ModelConfig, TrainConfig
from pico_lightning.data.batch import TrainBatch
from pico_lightning.data.eval_items import EvalItem
from pico_lightning.data.schema import CATEGORIES
from pico_lightning.errors import UserError
from pico_lightning.evaluation.evaluator import EvalMetrics, EvalOutput, evaluate_item
from pico_lightning.inference.sampler import TextInputs
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
from pico_lightning.model.text import PromptEmbedding
from pico_lightning.objective import fill_loss, fill_prediction
from pico_lightning.panels import Layout, target_mask
from pico_lightning.training.divergence import DivergenceGuard
from pico_lightning.training.optim import build_optimizer, build_schedule, clip_gradients

log = logging.getLogger(__name__)


def step_autocast(precision: str, device_type: str) -> AbstractContextManager:
    """The autocast a training step runs under for ``train.precision``: Lightning's own mixed-precision context for
    the ``*-mixed`` precisions, none otherwise (for the probe and the benchmarks' bare loop, which run steps outside
    the Trainer)."""
    if precision in ("bf16-mixed", "16-mixed"):
        return MixedPrecision(precision, device_type).autocast_context_manager()
    return nullcontext()


class TrainingDivergedError(UserError):
    """A non-finite loss or gradient: training stops before the bad update is applied or saved."""


class PicoModule(pl.LightningModule):
    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        prompts: dict[str, PromptEmbedding],
        lora: LoraConfig | str | None = None,
        eval_cfg: EvalConfig | None = None,
        layout: Layout | None = None,
        eval_plan: dict[str, list[str]] | None = None,
        release_after_training: bool = False,
    ):
        """``lora``: a LoraConfig attaches a fresh adapter to train, a path loads a diffusers-format LoRA, None
        keeps the bare base. ``eval_plan`` ({suite: tasks}, the same on every rank) enables validation.
        ``release_after_training`` drops the model parts at the end of training (see :meth:`on_train_end`): for a
        fit after which nothing uses the module, as `pico train`'s."""
        super().__init__()
        self.model_cfg, self.cfg, self.lora, self.eval_cfg, self.layout = model_cfg, train_cfg, lora, eval_cfg, layout
        self.transformer: torch.nn.Module | None = None  # built in configure_model
        self.autoencoder: torch.nn.Module | None = None
        self.scheduler: FlowMatchEulerDiscreteScheduler | None = None  # a template: samplers copy it
        self.identity = ""
        self.prompt_index = {prompt: i for i, prompt in enumerate(prompts)}
        self.register_buffer("prompt_embeds", torch.stack([e for e, _ in prompts.values()]), persistent=False)
        self.register_buffer("pooled_embeds", torch.stack([p for _, p in prompts.values()]), persistent=False)
        self.val_metrics = EvalMetrics(eval_plan, layout) if eval_plan else None
        self.strict_loading = False  # checkpoints hold only the trainable parameters
        self._batch_tasks: list[str] = []
        self._divergence = DivergenceGuard()  # the stop for a fused optimizer
        self.release_after_training = release_after_training
        self.checkpoint_plan: CheckpointPlan | None = None  # what train.gradient_checkpointing=auto chose

    def configure_model(self) -> None:
        """Build the frozen base and its adapter once, in the strategy's init context; with ``train.full_finetune``
        (and no ``lora``) every DiT parameter trains instead."""
        if self.transformer is not None:
            return
        if self.cfg.full_finetune and self.lora:
            raise UserError("train.full_finetune: trains the whole DiT, so expected a module without a LoRA")
        parts = build_parts(self.model_cfg, device=torch.get_default_device())
        quantize_base(parts.transformer, self.model_cfg.base_quantization)  # before LoRA: peft wraps the 8-bit layers
        if self.cfg.full_finetune:
            parts.transformer.train().requires_grad_(True)
        elif isinstance(self.lora, LoraConfig):
            add_lora(parts.transformer, self.lora, seed=self.cfg.seed)
        elif self.lora:
            load_lora(parts.transformer, self.lora)
        if self.cfg.gradient_checkpointing == "auto":
            self._checkpoint_what_memory_needs(parts)
        elif self.cfg.gradient_checkpointing:
            checkpoint_all(parts.transformer)
        if self.device_mesh is not None:  # train.strategy=fsdp (training/strategy.py)
            shard_transformer(parts.transformer, self.device_mesh["data_parallel"])
        if self.cfg.compile:
            compile_blocks(parts.transformer)  # after LoRA, checkpointing, sharding: the compiled blocks include them
        self.transformer, self.autoencoder = parts.transformer, parts.autoencoder
        self.scheduler, self.identity = parts.scheduler, parts.identity

    def _checkpoint_what_memory_needs(self, parts: FluxParts) -> None:
        """``train.gradient_checkpointing: auto``: plan from one probe of this device's training step (a grid of the
        layout's size per episode of the per-device batch, in the fit's precision), against the memory budget."""
        device = next(parts.transformer.parameters()).device
        budget_gb = self.cfg.memory_budget_gb
        budget = int(budget_gb * 2**30) if budget_gb is not None else free_memory(device)
        if budget is None:
            return
        if self.layout is None:
            raise ValueError("train.gradient_checkpointing=auto probes a training step: build the module with a layout")
        layout, batch = self.layout, self.cfg.per_device_batch()
        grid = torch.zeros(batch, 3, layout.height, layout.width, device=device)
        mask = target_mask(layout).to(device).expand(batch, 1, -1, -1)
        first = torch.zeros(batch, dtype=torch.long)  # the first prompt for every episode
        text = TextInputs(self.prompt_embeds[first].to(device), self.pooled_embeds[first].to(device))
        trainable = sum(p.numel() for p in parts.transformer.parameters() if p.requires_grad)

        def probe():
            with step_autocast(self.cfg.precision, device.type):
                generator = torch.Generator(device).manual_seed(0)
                return fill_prediction(parts, grid, mask, text, generator, self.cfg, self.model_cfg.guidance)

        self.checkpoint_plan = plan = plan_checkpointing(parts.transformer, probe, budget, trainable)
        if plan.need > plan.room:
            log.warning(plan.describe())
        elif self.global_rank == 0:
            print(plan.describe(), flush=True)  # the job log says what auto chose (each rank plans its own device)
        checkpoint_selected(parts.transformer, plan.checkpointed)

    @property
    def parts(self) -> FluxParts:
        """The live model parts (LoRA attached), as inference takes them."""
        return FluxParts(self.transformer, self.autoencoder, self.scheduler, self.identity)

    def text(self, prompt: str) -> TextInputs:
        """(1, Lt, D) and (1, D) embeddings of ``prompt`` from the prompt table, in the transformer's dtype."""
        index = int(self._prompt_ids([prompt])[0])
        dtype = self.transformer.dtype
        return TextInputs(
            self.prompt_embeds[index : index + 1].to(dtype), self.pooled_embeds[index : index + 1].to(dtype)
        )

    def forward(
        self, grid: torch.Tensor, mask: torch.Tensor, prompt_ids: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One noised prediction: (B, L, 4C) predicted and target velocities for grids (B, 3, H, W)."""
        return fill_prediction(
            self.parts, grid, mask, self._text(prompt_ids), generator, self.cfg, self.model_cfg.guidance
        )

    def fill_loss(
        self, grid: torch.Tensor, mask: torch.Tensor, prompt_ids: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """(B,) flow-matching loss of grids (B, 3, H, W) with masks (B, 1, H, W) and prompt ids (B,)."""
        return fill_loss(self.parts, grid, mask, self._text(prompt_ids), generator, self.cfg, self.model_cfg.guidance)

    def _text(self, prompt_ids: torch.Tensor) -> TextInputs:
        return TextInputs(self.prompt_embeds[prompt_ids], self.pooled_embeds[prompt_ids])

    def on_before_batch_transfer(self, batch: TrainBatch | EvalItem, dataloader_idx: int) -> TrainBatch | EvalItem:
        """Map prompts and categories to id tensors on the host, so they travel with the batch (no extra copies)."""
        if isinstance(batch, dict):
            batch["prompt_id"] = self._prompt_ids(batch["prompt"])
            batch["category_id"] = torch.tensor([CATEGORIES.index(c) for c in batch["category"]])
        return batch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        generator = self._step_generator(batch_idx)
        per_sample = self.fill_loss(batch["grid"], batch["mask"], batch["prompt_id"], generator)  # (B,)
        loss = per_sample.mean()
        self._batch_tasks = list(batch["task"])
        self._log_losses(loss, per_sample, batch["category_id"], batch["category"])
        if "skipped" in batch:
            self.log("data/skipped", batch["skipped"].float().sum(), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, item: EvalItem, batch_idx: int) -> EvalOutput:
        """Seed-scored fill of one evaluation episode; metrics update locally and sync at the epoch's end. The
        output goes to the callbacks' ``on_validation_batch_end`` (the gallery: training/validation.py)."""
        output = evaluate_item(self, item, self.eval_cfg, self.layout, self.model_cfg.guidance)
        if item.counted:  # an uncounted repeat only keeps this rank in step with the others (data/eval_items.py)
            self.val_metrics.update(output)
        return output

    def on_validation_epoch_end(self) -> None:
        """Sync the metrics (a collective, on every rank) and log them: ``eval/<suite>/<metric>``, ``eval/score``;
        callbacks and `pico train` read them back from ``trainer.callback_metrics``."""
        results = self.val_metrics.compute(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        self.val_metrics.reset()
        # already synced by torchmetrics; "step" puts the row at the step evaluated (Lightning's logger x-axis)
        self.log_dict({**results, "step": float(self.global_step)}, batch_size=1)

    def configure_optimizers(self):
        cfg, params = self.cfg, [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(
            params, cfg.scaled_lr(), cfg.weight_decay, cfg.precision, all(p.is_cuda for p in params)
        )
        schedule = build_schedule(optimizer, cfg.schedule, cfg.warmup_steps, cfg.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip here (Lightning's precision plugins refuse a fused AdamW), and stop on a non-finite gradient norm
        before the update is applied. A fused AdamW skips that update on the device and the stop follows one step
        later, with no host sync per step (training/divergence.py). Otherwise the check is immediate, as a vote over
        ranks: FSDP holds gradient shards, so one rank alone raising would leave the others waiting in a collective.
        Under a GradScaler (16-mixed) an infinite norm is the scaler's to handle: it skips that step."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        norm = clip_gradients(optimizer, gradient_clip_val or math.inf, scaler)
        if scaler is not None:
            return
        if DivergenceGuard.applies_to(optimizer):
            self._divergence.record(norm, optimizer, self.global_step, self._batch_tasks)
        elif self.trainer.strategy.reduce_boolean_decision(not bool(norm.isfinite()), all=False):
            raise TrainingDivergedError(self._divergence_message(self.global_step, self._batch_tasks))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._raise_if_diverged(include_latest=False)

    def on_train_end(self) -> None:
        """Lightning runs this after every callback's ``on_train_end`` (training/fit_end.py ``FitEnd``: the last
        checkpoint, the LoRA export, the summary) and before ``Strategy.teardown``, which moves the module to the
        CPU (single device, DDP): a ~24 GB device-to-host copy per rank for FLUX.1-Fill. With
        ``release_after_training`` nothing is left to copy."""
        self._raise_if_diverged(include_latest=True)
        if self.release_after_training:
            self.transformer = self.autoencoder = None

    def _raise_if_diverged(self, include_latest: bool) -> None:
        flagged = self._divergence.diverged(include_latest)
        if flagged is not None:
            raise TrainingDivergedError(self._divergence_message(flagged.step, flagged.tasks))

    @staticmethod
    def _divergence_message(step: int, tasks) -> str:
        return f"non-finite loss/gradient at step {step}; batch tasks: {', '.join(tasks)}"

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only the trainable parameters: the checkpoint's size scales with the LoRA, not the base."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        foreign = sorted(set(checkpoint["state_dict"]) - trainable)
        if foreign or not checkpoint["state_dict"]:
            raise UserError(f"checkpoint does not fit this model's LoRA (unexpected keys: {foreign[:3]})")

    def _step_generator(self, batch_idx: int) -> torch.Generator:
        """A generator seeded by (seed, step, rank): exact resumes with no RNG state in the checkpoint."""
        accumulate = self.cfg.accumulate_grad_batches
        micro_step = self.global_step * accumulate + batch_idx % accumulate
        seed = (self.cfg.seed * 1_000_003 + micro_step) * 1009 + self.global_rank
        return torch.Generator(device=self.device).manual_seed(seed)

    def _prompt_ids(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in prompts if p not in self.prompt_index]
        if missing:
            raise UserError(f"prompt {missing[0]!r} has no cached embedding (run `pico embed` for this experiment)")
        return torch.tensor([self.prompt_index[p] for p in prompts])

    def _log_losses(
        self, loss: torch.Tensor, per_sample: torch.Tensor, category_ids: torch.Tensor, categories: list[str]
    ) -> None:
        """train/loss and train/loss/<category> for the categories present (counts from host strings: no sync)."""
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=per_sample.shape[0])
        sums = torch.zeros(len(CATEGORIES), device=per_sample.device).index_add_(0, category_ids, per_sample.float())
        for category in sorted(set(categories)):
            count = categories.count(category)
            self.log(
                f"train/loss/{category}",
                sums[CATEGORIES.index(category)] / count,
                on_step=True,
                on_epoch=False,
                batch_size=count,
            )
