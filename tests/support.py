"""What the tests and the benchmark share: a fixed batch stream, a tiny FLUX.1-Fill directory, the reference sampler,
a run's metrics.jsonl rows.

Tests import it as ``support`` (pytest puts tests/ on the path), the benchmark as ``tests.support`` (it runs from the
repository root: ``python -m bench.gpu``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pico_lightning import panels
from pico_lightning.inference.sampler import FillState, decode, denoise, init_state, make_scheduler
from pico_lightning.model.autoencoder import Autoencoder
from pico_lightning.model.conditioning import TextInputs


def fixed_batch(batch_size: int = 4, panel_size: int = 16, non_finite: bool = False) -> dict:
    """The same tiny batch every time: (x, -x) exemplar and query pairs, prompts "Edit" and "" in turn;
    ``non_finite`` puts a NaN in the first grid."""
    generator = torch.Generator().manual_seed(0)
    layout = panels.Layout(2, 2, panel_size)
    grids = []
    for _ in range(batch_size):
        a = torch.rand(3, panel_size, panel_size, generator=generator) * 2 - 1
        grids.append(panels.compose_grid([a, -a, a.flip(-1), -a.flip(-1)], layout))
    grid = torch.stack(grids)
    if non_finite:
        grid[0, 0, 0, 0] = float("nan")
    return {
        "grid": grid,
        "mask": panels.target_mask(layout).expand(batch_size, -1, -1, -1).clone(),
        "prompt": [("Edit", "")[i % 2] for i in range(batch_size)],
        "task": ["negate"] * batch_size,
        "category": [("manipulation", "restoration")[i % 2] for i in range(batch_size)],
    }


class FixedEpisodes(torch.utils.data.IterableDataset):
    """An endless stream of :func:`fixed_batch` (fresh copies: a step may change its batch in place)."""

    def __init__(self, **kwargs):
        self.batch = fixed_batch(**kwargs)

    def __iter__(self):
        while True:
            yield {k: (v.clone() if isinstance(v, torch.Tensor) else list(v)) for k, v in self.batch.items()}


def fixed_loader(**kwargs) -> torch.utils.data.DataLoader:
    """:class:`FixedEpisodes` as a loader of whole batches; ``kwargs`` go to :func:`fixed_batch`."""
    return torch.utils.data.DataLoader(FixedEpisodes(**kwargs), batch_size=None)


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


def metrics_rows(run_dir: str | Path) -> list[dict]:
    """A run's ``metrics.jsonl`` rows, read while it trains too: a last line not yet written whole (no newline) is
    left for the next read."""
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]
