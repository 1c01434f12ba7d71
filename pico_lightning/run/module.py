"""PicoModule: the LightningModule that LoRA-tunes the Fill DiT on grid episodes with the flow-matching loss.

It receives the built parts (no architecture code here) and the prompt-embedding table; the flow maths lives in
flow.py and the Fill conditioning in model/conditioning.py. Noise and timesteps come from a generator seeded by
(train.seed, global step, rank), so a resumed run draws exactly what an uninterrupted one would. Checkpoints hold
only the trainable (LoRA) parameters, the optimizer, the scheduler and the loop state.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch

from pico_lightning import flow
from pico_lightning.config import TrainConfig
from pico_lightning.data.schema import CATEGORIES
from pico_lightning.errors import UserError
from pico_lightning.model.autoencoder import Autoencoder
from pico_lightning.model.conditioning import (
    fill_condition,
    latent_image_ids,
    pack_latents,
    predict_velocity,
    token_region,
)


class TrainingDivergedError(UserError):
    """A non-finite loss or gradient: training stops before the bad update is applied or saved."""


class PicoModule(pl.LightningModule):
    def __init__(
        self,
        transformer: torch.nn.Module,
        autoencoder: Autoencoder,
        scheduler_config: dict,
        prompts: dict[str, tuple[torch.Tensor, torch.Tensor]],
        cfg: TrainConfig,
        guidance: float,
    ):
        super().__init__()
        self.transformer = transformer
        self.autoencoder = autoencoder
        self.scheduler_config = dict(scheduler_config)
        self.cfg = cfg
        self.guidance = guidance
        self.prompt_index = {prompt: i for i, prompt in enumerate(prompts)}
        self.register_buffer("prompt_embeds", torch.stack([e for e, _ in prompts.values()]), persistent=False)
        self.register_buffer("pooled_embeds", torch.stack([p for _, p in prompts.values()]), persistent=False)
        self.strict_loading = False  # checkpoints hold only the trainable parameters
        self._batch_tasks: list[str] = []

    def forward(
        self, grid: torch.Tensor, mask: torch.Tensor, prompt_ids: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One noised prediction: (B, L, 4C) predicted and target velocities for grids (B, 3, H, W)."""
        with torch.no_grad():
            x0 = pack_latents(self.autoencoder.encode(grid, generator=generator))
            condition = fill_condition(self.autoencoder, grid, mask, generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t = flow.sample_timesteps(
            x0.shape[0],
            self.cfg.timestep_density,
            generator,
            x0.device,
            self.cfg.logit_mean,
            self.cfg.logit_std,
            self.cfg.mode_scale,
        )
        if self.cfg.resolution_shift:
            t = flow.resolution_shift(t, flow.shift_mu(x0.shape[1], self.scheduler_config))
        dtype = self.transformer.dtype
        height, width = (
            grid.shape[-2] // self.autoencoder.scale_factor,
            grid.shape[-1] // self.autoencoder.scale_factor,
        )
        guidance = torch.full((x0.shape[0],), self.guidance, device=x0.device, dtype=torch.float32)
        pred = predict_velocity(
            self.transformer,
            flow.interpolate(x0, noise, t).to(dtype),
            condition.to(dtype),
            t.to(dtype),
            guidance,
            self.prompt_embeds[prompt_ids].to(dtype),
            self.pooled_embeds[prompt_ids].to(dtype),
            latent_image_ids(height, width, x0.device, dtype),
        )
        return pred, flow.velocity_target(x0, noise)

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Map prompts and categories to id tensors on the host, so they travel with the batch (no extra copies)."""
        batch["prompt_id"] = self._prompt_ids(batch["prompt"])
        batch["category_id"] = torch.tensor([CATEGORIES.index(c) for c in batch["category"]])
        return batch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        grid, mask = batch["grid"], batch["mask"]
        pred, target = self(grid, mask, batch["prompt_id"], self._step_generator(batch_idx))
        weight = token_region(mask, self.autoencoder.scale_factor) if self.cfg.loss_region == "target" else None
        per_sample = flow.flow_matching_loss(pred, target, weight)  # (B,)
        loss = per_sample.mean()
        self._batch_tasks = list(batch["task"])
        self._log_losses(loss, per_sample, batch["category_id"], batch["category"])
        if "skipped" in batch:
            self.log("data/skipped", batch["skipped"].float().sum(), on_step=True, on_epoch=False)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stop on a non-finite gradient (all-reduced, so every rank stops together) before it is applied."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and not torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum()):
            raise TrainingDivergedError(
                f"non-finite loss/gradient at step {self.global_step}; batch tasks: {', '.join(self._batch_tasks)}"
            )

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "set_position"):
            datamodule.set_position(self.global_step * self.cfg.accumulate_grad_batches)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        fused = all(p.is_cuda for p in params)
        optimizer = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=fused)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=self._lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only the trainable parameters: the checkpoint's size scales with the LoRA, not the base."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        foreign = sorted(set(checkpoint["state_dict"]) - trainable)
        if foreign or not checkpoint["state_dict"]:
            raise UserError(f"checkpoint does not fit this model's LoRA (unexpected keys: {foreign[:3]})")

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up, then constant or cosine decay to 0 at train.max_steps."""
        if step < self.cfg.warmup_steps:
            return (step + 1) / self.cfg.warmup_steps
        if self.cfg.schedule == "constant":
            return 1.0
        progress = (step - self.cfg.warmup_steps) / max(1, self.cfg.max_steps - self.cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def _step_generator(self, batch_idx: int) -> torch.Generator:
        """A generator seeded by (seed, step, rank): exact resumes with no RNG state in the checkpoint."""
        accumulate = self.cfg.accumulate_grad_batches
        micro_step = self.global_step * accumulate + batch_idx % accumulate
        seed = (self.cfg.seed * 1_000_003 + micro_step) * 1009 + self.global_rank
        return torch.Generator(device=self.device).manual_seed(seed)

    def _prompt_ids(self, prompts: list[str]) -> torch.Tensor:
        missing = [p for p in prompts if p not in self.prompt_index]
        if missing:
            raise UserError(f"prompt {missing[0]!r} has no cached embedding (the data produced an unexpected prompt)")
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
