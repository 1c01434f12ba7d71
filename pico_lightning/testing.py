"""What the tests and the benchmark share: fixed batches, a tiny FLUX.1-Fill directory, the reference sampler."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pico_lightning import panels
from pico_lightning.inference.sampler import FillState, TextInputs, decode, denoise, init_state, make_scheduler
from pico_lightning.model.autoencoder import Autoencoder


def fixed_batch(panel_size: int, batch_size: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    layout = panels.Layout(2, 2, panel_size)
    grid = torch.rand(batch_size, 3, layout.height, layout.width, generator=generator) * 2 - 1
    return {
        "grid": grid,
        "mask": panels.target_mask(layout).expand(batch_size, -1, -1, -1).clone(),
        "prompt": ["Edit"] * batch_size,
        "task": ["bench"] * batch_size,
        "category": ["manipulation"] * batch_size,
    }


class _Repeat(torch.utils.data.IterableDataset):
    def __init__(self, batch: dict):
        self.batch = batch

    def __iter__(self):
        while True:
            yield {k: (v.clone() if isinstance(v, torch.Tensor) else list(v)) for k, v in self.batch.items()}


def fixed_loader(panel_size: int, batch_size: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(_Repeat(fixed_batch(panel_size, batch_size)), batch_size=None)


def tiny_flux_dir(tmp: Path) -> Path:
    """A tiny FLUX.1-Fill directory (KL autoencoder) written by the stock pipeline."""
    return save_tiny_flux_fill(tmp / "tiny_flux_fill")


def save_tiny_flux_fill(path: str | Path, preset: str = "tiny-kl") -> Path:
    """Write a random-init FLUX.1-Fill directory of ``preset`` with the stock pipeline's save_pretrained: a
    stand-in for the real weights in tests and benchmarks, loadable by ``model.pretrained_dir``."""
    from pico_lightning.config import ModelConfig
    from pico_lightning.model.backbone import build_parts, build_text_encoders, save_pipeline

    cfg = ModelConfig(preset=preset)
    return save_pipeline(build_parts(cfg), build_text_encoders(cfg), path)


def sample(
    transformer: torch.nn.Module,
    autoencoder: Autoencoder,
    scheduler: FlowMatchEulerDiscreteScheduler,
    grid: torch.Tensor,
    mask: torch.Tensor,
    text: TextInputs,
    num_steps: int,
    guidance: float,
    seed: int,
) -> tuple[torch.Tensor, FillState]:
    """Fill the masked panel of one episode with one seed, composing the sampler's steps: (1, 3, H, W) image and
    the final state (what tests and benchmarks compare against the stock pipeline)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    state = init_state(autoencoder, grid, mask, [generator], text.prompt_embeds.dtype)
    scheduler = make_scheduler(scheduler, num_steps, state.latent_size, grid.device)
    state = denoise(transformer, scheduler, state, text, guidance, range(num_steps))
    return decode(autoencoder, state), state
