"""PicoModule: the LightningModule that LoRA-tunes the Fill DiT on grid episodes and evaluates it as validation.

A Lightning skeleton: it receives config slices and the prompt-embedding table, and builds the model in
:meth:`configure_model` with :func:`~pico_lightning.model.build.build_trainable`, i.e. inside the strategy's init
context (on the device, sharded under FSDP), never as a full host copy per rank. The objective is
objective.py's, the seed-scored evaluation evaluation/evaluator.py's, the non-finite stop
training/divergence.py's. Noise and timesteps come from a generator seeded by (train.seed, global step, rank), so
a resumed run draws exactly what an uninterrupted one would. Checkpoints hold only the trainable (LoRA)
parameters, the optimizer, the scheduler and the loop state. The module satisfies
:class:`~pico_lightning.inference.fill_model.FillModel` (``parts``, ``device``, ``text``).

    module = PicoModule(cfg.model, cfg.train, prompts, lora=cfg.lora)   # see training/train.py for the whole wiring
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pico_lightning.config import EvalConfig, LoraConfig, ModelConfig, TrainConfig
from pico_lightning.data.batch import TrainBatch
from pico_lightning.data.eval_items import EvalItem
from pico_lightning.data.schema import CATEGORIES
from pico_lightning.errors import UserError
from pico_lightning.evaluation.evaluator import EvalMetrics, EvalOutput, SuitePlan, evaluate_item
from pico_lightning.model.backbone import FluxParts
from pico_lightning.model.build import build_trainable
from pico_lightning.model.checkpointing import CheckpointPlan
from pico_lightning.model.conditioning import TextInputs
from pico_lightning.model.text import PromptEmbedding, PromptTable
from pico_lightning.objective import StepProbe, category_means, fill_loss
from pico_lightning.panels import Layout
from pico_lightning.training.divergence import DivergenceGuard
from pico_lightning.training.optim import build_optimizer, build_schedule, clip_gradients


class PicoModule(pl.LightningModule):
    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        prompts: dict[str, PromptEmbedding],
        lora: LoraConfig | str | None = None,
        eval_cfg: EvalConfig | None = None,
        layout: Layout | None = None,
        eval_plan: dict[str, SuitePlan] | None = None,
        release_after_training: bool = False,
    ):
        """``lora``: a LoraConfig attaches a fresh adapter to train, a path loads a diffusers-format LoRA, None
        keeps the bare base. ``eval_plan`` ({suite: SuitePlan}, the same on every rank) enables validation.
        ``release_after_training`` drops the model parts at the end of training (see :meth:`on_train_end`): for a
        fit after which nothing uses the module, as `pico train`'s."""
        super().__init__()
        self.model_cfg, self.cfg, self.lora, self.eval_cfg, self.layout = model_cfg, train_cfg, lora, eval_cfg, layout
        self.transformer: torch.nn.Module | None = None  # built in configure_model
        self.autoencoder: torch.nn.Module | None = None
        self.scheduler: FlowMatchEulerDiscreteScheduler | None = None  # a template: samplers copy it
        self.identity = ""
        self.prompts = PromptTable(prompts)
        self.val_metrics = EvalMetrics(eval_plan, layout) if eval_plan else None
        self.strict_loading = False  # checkpoints hold only the trainable parameters
        self.divergence = DivergenceGuard()
        self.release_after_training = release_after_training
        self.checkpoint_plan: CheckpointPlan | None = None  # what train.gradient_checkpointing=auto chose

    def configure_model(self) -> None:
        """Build the base and its adapter once, in the strategy's init context (model/build.py)."""
        if self.transformer is not None:
            return
        mesh = self.device_mesh["data_parallel"] if self.device_mesh is not None else None  # train.strategy=fsdp
        first = TextInputs(*self.prompts.rows(slice(0, 1)))  # auto checkpointing probes with the first prompt
        probe = StepProbe(self.layout, first, self.cfg, self.model_cfg.guidance) if self.layout else None
        parts, self.checkpoint_plan = build_trainable(
            self.model_cfg, self.cfg, self.lora, torch.get_default_device(), mesh, probe, self.global_rank
        )
        self.transformer, self.autoencoder = parts.transformer, parts.autoencoder
        self.scheduler, self.identity = parts.scheduler, parts.identity

    @property
    def parts(self) -> FluxParts:
        """The live model parts (LoRA attached), as inference takes them."""
        return FluxParts(self.transformer, self.autoencoder, self.scheduler, self.identity)

    def text(self, prompt: str) -> TextInputs:
        """(1, Lt, D) and (1, D) embeddings of ``prompt`` from the prompt table, in the transformer's dtype."""
        row = self.prompts.row_of(prompt)
        embeds, pooled = self.prompts.rows(slice(row, row + 1))
        return TextInputs(embeds.to(self.transformer.dtype), pooled.to(self.transformer.dtype))

    def fill_loss(
        self, grid: torch.Tensor, mask: torch.Tensor, prompt_ids: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """(B,) flow-matching loss of grids (B, 3, H, W) with masks (B, 1, H, W) and prompt ids (B,)."""
        text = TextInputs(*self.prompts.rows(prompt_ids))
        return fill_loss(self.parts, grid, mask, text, generator, self.cfg, self.model_cfg.guidance)

    def on_before_batch_transfer(self, batch: TrainBatch | EvalItem, dataloader_idx: int) -> TrainBatch | EvalItem:
        """Map prompts and categories to id tensors on the host, so they travel with the batch (no extra copies)."""
        if isinstance(batch, dict):
            batch["prompt_id"] = self.prompts.ids(batch["prompt"])
            batch["category_id"] = torch.tensor([CATEGORIES.index(c) for c in batch["category"]])
        return batch

    def training_step(self, batch: TrainBatch, batch_idx: int) -> torch.Tensor:
        """The mean loss; logs train/loss, train/loss/<category> for the categories present and data/skipped."""
        per_sample = self.fill_loss(batch["grid"], batch["mask"], batch["prompt_id"], self._step_generator(batch_idx))
        loss, size = per_sample.mean(), per_sample.shape[0]
        self.divergence.tasks = list(batch["task"])
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=size)
        for category, (mean, count) in category_means(per_sample, batch["category_id"], batch["category"]).items():
            self.log(f"train/loss/{category}", mean, on_step=True, on_epoch=False, batch_size=count)
        if "skipped" in batch:
            self.log("data/skipped", batch["skipped"].float().sum(), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, item: EvalItem, batch_idx: int) -> EvalOutput:
        """Seed-scored fill of one evaluation episode; metrics update locally and sync at the epoch's end. The
        output goes to the callbacks' ``on_validation_batch_end`` (the gallery: training/lifecycle.py)."""
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
        before the update is applied (training/divergence.py). Under a GradScaler (16-mixed) an infinite norm is
        the scaler's to handle: it skips that step."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        norm = clip_gradients(optimizer, gradient_clip_val or math.inf, scaler)
        if scaler is None:
            vote = self.trainer.strategy.reduce_boolean_decision
            self.divergence.check(norm, optimizer, self.global_step, lambda bad: vote(bad, all=False))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.divergence.raise_if_diverged(include_latest=False)

    def on_train_end(self) -> None:
        """Lightning runs this after every callback's ``on_train_end`` (training/lifecycle.py ``FitEnd``: the last
        checkpoint, the LoRA export, the summary) and before ``Strategy.teardown``, which moves the module to the
        CPU (single device, DDP): a ~24 GB device-to-host copy per rank for FLUX.1-Fill. With
        ``release_after_training`` nothing is left to copy."""
        self.divergence.raise_if_diverged(include_latest=True)
        if self.release_after_training:
            self.transformer = self.autoencoder = None

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
