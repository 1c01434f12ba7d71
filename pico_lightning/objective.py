"""The training objective of a Fill model, written once: the per-sample flow-matching loss of a batch of grids.

PicoModule's training step, the demo base's pretraining and the benchmarks all call :func:`fill_loss`. It composes
the pure maths of flow.py (flow time from a density, FLUX's resolution shift, interpolation, velocity target,
weighted MSE) with the Fill inputs of model/conditioning.py. One generator draws everything random, in a fixed
order (the latents of grids and masked grids, one posterior draw of 2B samples from one batched encode, grids
first; then noise, then flow times), so a caller that seeds it per step gets exact resumes. A step run outside the
Trainer (auto checkpointing's probe, :class:`StepProbe`; the benchmarks' bare loop) takes its precision from
:func:`step_autocast`, Lightning's own autocast for ``train.precision``. :func:`category_means` splits a batch's loss
by task family, as the training step logs it.

    loss = fill_loss(parts, grid, mask, text, generator, cfg.train, cfg.model.guidance).mean()
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from pico_lightning import flow
from pico_lightning.config import TrainConfig
from pico_lightning.data.schema import CATEGORIES
from pico_lightning.layout import Layout
from pico_lightning.model.autoencoder import Autoencoder
from pico_lightning.model.backbone import FluxParts
from pico_lightning.model.conditioning import (
    TextInputs,
    channels_last,
    condition_tokens,
    latent_image_ids,
    pack_latents,
    predict_velocity,
    token_region,
)
from pico_lightning.panels import target_mask


def fill_loss(
    parts: FluxParts,
    grid: torch.Tensor,
    mask: torch.Tensor,
    text: TextInputs,
    generator: torch.Generator | None,
    cfg: TrainConfig,
    guidance: float,
) -> torch.Tensor:
    """(B,) flow-matching loss of the DiT on grids (B, 3, H, W) in [-1, 1] with masks (B, 1, H, W), 1 = generate.

    ``text`` holds one prompt per grid, (B, Lt, D) and (B, D). Of ``cfg`` the objective reads the flow-time density
    (``timestep_density``, ``logit_mean``, ``logit_std``, ``mode_scale``), ``resolution_shift`` and ``loss_region``
    (the masked tokens, weighted by the share of their pixels masked, or the whole grid); ``guidance`` feeds the
    guidance embedding. The loss is computed in float32.
    """
    pred, target = fill_prediction(parts, grid, mask, text, generator, cfg, guidance)
    weight = token_region(mask, parts.autoencoder.scale_factor) if cfg.loss_region == "target" else None
    return flow.flow_matching_loss(pred, target, weight)


def fill_prediction(
    parts: FluxParts,
    grid: torch.Tensor,
    mask: torch.Tensor,
    text: TextInputs,
    generator: torch.Generator | None,
    cfg: TrainConfig,
    guidance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two sides :func:`fill_loss` compares, (B, L, 4C) each: the DiT's velocity at a noised x_t, and the target.

    The autoencoder runs without gradients; the DiT in its own dtype."""
    autoencoder, transformer = parts.autoencoder, parts.transformer
    with torch.no_grad():
        x0, condition = encode_fill_inputs(autoencoder, grid, mask, generator)  # (B, L, 4C), (B, L, 4C + 4s^2)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = flow.sample_timesteps(
        x0.shape[0], cfg.timestep_density, generator, x0.device, cfg.logit_mean, cfg.logit_std, cfg.mode_scale
    )
    if cfg.resolution_shift:
        t = flow.resolution_shift(t, flow.shift_mu(x0.shape[1], parts.scheduler.config))
    dtype, scale = transformer.dtype, autoencoder.scale_factor
    pred = predict_velocity(
        transformer,
        flow.interpolate(x0, noise, t).to(dtype),
        condition.to(dtype),
        t.to(dtype),
        torch.full((x0.shape[0],), guidance, device=x0.device, dtype=torch.float32),
        text.prompt_embeds.to(dtype),
        text.pooled_prompt_embeds.to(dtype),
        latent_image_ids(grid.shape[-2] // scale, grid.shape[-1] // scale, x0.device, dtype),
    )
    return pred, flow.velocity_target(x0, noise)


def encode_fill_inputs(
    autoencoder: Autoencoder, grid: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's grid tokens (B, L, 4C) and condition tokens (B, L, 4C + 4s^2) from one encode of 2B images.

    Grids and masked grids go through the autoencoder as one batch, grids first: one call instead of two (the two
    encodes were 11 % of a full-size step on an H200, bench/RESULTS.md), and for a stochastic autoencoder one
    posterior draw of 2B latents. The batch is channels-last, the layout
    :func:`~pico_lightning.model.conditioning.fill_condition` encodes the masked grid in at inference
    (FluxFillPipeline's), so the condition is encoded by the same kind of conv kernels, with the same kind of bf16
    round-off, in training as in sampling; for the grid's latents, a regression target, either layout would do.
    """
    images = channels_last(torch.cat([grid, grid * (1 - mask)]))  # (2B, 3, H, W)
    latents, masked_latents = autoencoder.encode(images, generator=generator).chunk(2)  # (B, C, h, w) each
    return pack_latents(latents), condition_tokens(masked_latents, mask, autoencoder.scale_factor)


def category_means(
    per_sample: torch.Tensor, category_ids: torch.Tensor, categories: list[str]
) -> dict[str, tuple[torch.Tensor, int]]:
    """{category: (mean of ``per_sample`` (B,) over its episodes, how many)} for the categories present, in name
    order; ``category_ids`` (B,) index CATEGORIES. The counts come from the host strings: no sync."""
    sums = torch.zeros(len(CATEGORIES), device=per_sample.device).index_add_(0, category_ids, per_sample.float())
    counts = {category: categories.count(category) for category in sorted(set(categories))}
    return {category: (sums[CATEGORIES.index(category)] / count, count) for category, count in counts.items()}


def step_autocast(precision: str, device_type: str) -> AbstractContextManager:
    """The autocast a training step runs under for ``train.precision``: Lightning's own mixed-precision context for
    the ``*-mixed`` precisions, none otherwise (for steps run outside the Trainer)."""
    if precision in ("bf16-mixed", "16-mixed"):
        return MixedPrecision(precision, device_type).autocast_context_manager()
    return nullcontext()


@dataclass(frozen=True)
class StepProbe:
    """A fit's training step, for ``train.gradient_checkpointing=auto`` to measure (model/build.py): zero grids of
    ``layout``, one per episode of the per-device batch, their target masks and one prompt, in the fit's precision."""

    layout: Layout
    text: TextInputs  # one prompt's (1, Lt, D) and (1, D) embeddings, given to every episode
    train: TrainConfig
    guidance: float

    def __call__(self, parts: FluxParts) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        """The step's :func:`fill_prediction` on ``parts``, on their device, its inputs made once."""
        device = next(parts.transformer.parameters()).device
        layout, batch = self.layout, self.train.per_device_batch()
        grid = torch.zeros(batch, 3, layout.height, layout.width, device=device)
        mask = target_mask(layout).to(device).expand(batch, 1, -1, -1)
        embeds, pooled = self.text.prompt_embeds, self.text.pooled_prompt_embeds
        text = TextInputs(embeds.repeat(batch, 1, 1).to(device), pooled.repeat(batch, 1).to(device))

        def step() -> tuple[torch.Tensor, torch.Tensor]:
            with step_autocast(self.train.precision, device.type):
                generator = torch.Generator(device).manual_seed(0)
                return fill_prediction(parts, grid, mask, text, generator, self.train, self.guidance)

        return step
