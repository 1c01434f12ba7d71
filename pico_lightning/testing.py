"""What the benchmarks run on: the demo's tiny model, fixed batches, a tiny FLUX.1-Fill directory, a step timer."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image

from pico_lightning import panels
from pico_lightning.inference.sampler import FillState, TextInputs, decode, denoise, init_state, make_scheduler
from pico_lightning.model.autoencoder import Autoencoder

DEMO = Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml"


def bench_config(tmp: Path):
    """experiments/demo.yaml on freshly prepared VisRel-lite data in ``tmp``; W&B and eval off."""
    from pico_lightning.config import load_config
    from pico_lightning.prep.visrel_lite import build_visrel_lite

    build_visrel_lite(tmp / "data", seed=0, progress=False)
    return load_config(
        DEMO,
        [
            f"data.root={tmp / 'data'}",
            "data.num_workers=2",
            f"run.dir={tmp / 'runs'}",
            f"model.text_cache_dir={tmp / 'text'}",
            "eval.suites=[]",
            "logging.wandb_mode=disabled",
        ],
    )


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


class StepTimer(pl.Callback):
    """Per-step wall time (batch start to batch start) and the part of it spent waiting for the next batch."""

    def __init__(self, skip: int):
        self.skip = skip
        self.steps: list[float] = []
        self.waits: list[float] = []
        self._start = self._end = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._start is not None and batch_idx > self.skip:
            self.steps.append(now - self._start)
            self.waits.append(now - self._end)
        self._start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._end = time.perf_counter()

    def median(self) -> float:
        return statistics.median(self.steps)

    def median_wait(self) -> float:
        return statistics.median(self.waits)

    def wait_fraction(self) -> float:
        return sum(self.waits) / sum(self.steps)


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


def stock_call(tiny_dir: Path, grid: torch.Tensor, mask: torch.Tensor, text, num_steps: int):
    """A closure running the stock FluxFillPipeline on the same grid, mask, embeddings and seed."""
    from diffusers import FluxFillPipeline

    pipe = FluxFillPipeline.from_pretrained(tiny_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = panels.to_pil(grid[0])
    mask_image = Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8))

    def run():
        pipe(
            image=image,
            mask_image=mask_image,
            prompt_embeds=text.prompt_embeds,
            pooled_prompt_embeds=text.pooled_prompt_embeds,
            height=grid.shape[-2],
            width=grid.shape[-1],
            num_inference_steps=num_steps,
            guidance_scale=30.0,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )

    return run


@torch.no_grad()
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
