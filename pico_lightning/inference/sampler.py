"""The Fill sampler: the same math, random draws and decoding as diffusers' FluxFillPipeline, in steps.

``init_state`` draws, per seed and in the pipeline's order, the init image's latent sample (a stochastic
autoencoder only; strength 1 discards it), the noise, then the masked image's latent sample. ``make_scheduler``
sets sigmas ``linspace(1, 1/T, T)`` with FLUX's resolution shift mu. ``denoise`` runs any range of Euler steps,
so the seed scorer can stop after k steps and continue the chosen seed without recomputing anything.
Sampling integrates the flow from t = 1 (noise) to t = 0 (data); see flow.py for the convention.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor

from pico_lightning.flow import max_shift_tokens, shift_mu
from pico_lightning.model.autoencoder import Autoencoder
from pico_lightning.model.conditioning import (
    TextInputs,
    fill_condition,
    latent_image_ids,
    pack_latents,
    predict_velocity,
    unpack_latents,
)
from pico_lightning.packing import PACK


@dataclass
class FillState:
    """The denoising state of one episode under |S| seeds."""

    latents: torch.Tensor  # (S, L, 4C) packed noisy latents
    condition: torch.Tensor  # (S, L, 4C + 4s^2) packed masked-image latents + mask
    image_ids: torch.Tensor  # (L, 3)
    latent_size: tuple[int, int]  # (h, w) of the unpacked latents
    model_evaluations: int = 0  # transformer evaluations spent, counted per seed

    def select(self, index: int) -> FillState:
        """Keep one seed's state (the seed scorer's choice); nothing is recomputed."""
        return FillState(
            self.latents[index : index + 1],
            self.condition[index : index + 1],
            self.image_ids,
            self.latent_size,
            self.model_evaluations,
        )

    @staticmethod
    def concat(states: Sequence[FillState]) -> FillState:
        """Several episodes of one size as one batch (their rows in order), to denoise in one pass."""
        first = states[0]
        latents = torch.cat([s.latents for s in states])
        condition = torch.cat([s.condition for s in states])
        evaluations = sum(s.model_evaluations for s in states)
        return FillState(latents, condition, first.image_ids, first.latent_size, evaluations)


def init_state(
    autoencoder: Autoencoder,
    grid: torch.Tensor,
    mask: torch.Tensor,
    generators: Sequence[torch.Generator],
    dtype: torch.dtype,
) -> FillState:
    """Noise and condition for one episode, one row per generator (seed): grid (1, 3, H, W), mask (1, 1, H, W)."""
    device = grid.device
    height, width = grid.shape[-2] // autoencoder.scale_factor, grid.shape[-1] // autoencoder.scale_factor
    shape = (1, autoencoder.latent_channels, height, width)
    ae_dtype = next(autoencoder.parameters(), grid).dtype
    noises, conditions = [], []
    for generator in generators:
        if autoencoder.stochastic:  # the pipeline samples the init image's latents first, then discards them
            randn_tensor(shape, generator=generator, device=device, dtype=ae_dtype)
        noises.append(randn_tensor(shape, generator=generator, device=device, dtype=dtype))
        conditions.append(fill_condition(autoencoder, grid.to(dtype), mask.to(dtype), generator).to(dtype))
    latents = pack_latents(torch.cat(noises))
    return FillState(latents, torch.cat(conditions), latent_image_ids(height, width, device, dtype), (height, width))


def packed_tokens(grid_height: int, grid_width: int, scale_factor: int) -> int:
    """Packed latent tokens of a grid: (H/s/2) * (W/s/2) for an autoencoder of scale s and 2x2 packing."""
    return (grid_height // scale_factor // 2) * (grid_width // scale_factor // 2)


def largest_panel_size(rows: int, cols: int, scale_factor: int, scheduler_config) -> int | None:
    """The largest panel side whose rows x cols grid packs and keeps the resolution shift finite (None: no limit)."""
    limit = max_shift_tokens(scheduler_config)
    if limit is None:
        return None
    size = int(2 * scale_factor * math.sqrt(limit / (rows * cols)))
    while size > 0 and (
        packed_tokens(rows * size, cols * size, scale_factor) > limit or (rows * size) % PACK or (cols * size) % PACK
    ):
        size -= 1
    return size


def make_scheduler(
    template: FlowMatchEulerDiscreteScheduler,
    num_steps: int,
    latent_size: tuple[int, int],
    device: torch.device,
) -> FlowMatchEulerDiscreteScheduler:
    """A fresh scheduler with FluxFillPipeline's sigmas and resolution shift for this latent size."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(template.config)
    mu = shift_mu((latent_size[0] // 2) * (latent_size[1] // 2), scheduler.config)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), device=device, mu=mu)
    scheduler.set_begin_index(0)
    return scheduler


def denoise(
    transformer: torch.nn.Module,
    scheduler: FlowMatchEulerDiscreteScheduler,
    state: FillState,
    text: TextInputs,
    guidance: float,
    steps: Iterable[int],
) -> FillState:
    """Run Euler steps ``steps`` (indices into the scheduler's timesteps) on every seed of ``state``."""
    batch = state.latents.shape[0]
    text = text.expand(batch)
    guidance_in = None
    if transformer.config.guidance_embeds:
        guidance_in = torch.full([1], guidance, device=state.latents.device, dtype=torch.float32).expand(batch)
    latents = state.latents
    for index in steps:
        t = scheduler.timesteps[index]
        timestep = t.expand(batch).to(latents.dtype) / 1000  # the scheduler counts t in 1000ths
        velocity = predict_velocity(
            transformer,
            latents,
            state.condition,
            timestep,
            guidance_in,
            text.prompt_embeds,
            text.pooled_prompt_embeds,
            state.image_ids,
        )
        latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
        state.model_evaluations += batch
    state.latents = latents
    return state


def decode(autoencoder: Autoencoder, state: FillState) -> torch.Tensor:
    """Packed latents -> (S, 3, H, W) images in [-1, 1] (unclamped, as the autoencoder returns them)."""
    latents = unpack_latents(state.latents, *state.latent_size)
    return autoencoder.decode(latents)
