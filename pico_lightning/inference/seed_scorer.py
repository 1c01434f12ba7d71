"""The attention-guided seed scorer: |S| seeds for k early steps, score their routing, finish only the best.

Seeds run batched. During the first k steps, :class:`~pico_lightning.inference.routing.RoutingCapture` processors
on the configured blocks reduce how the target panel's tokens route attention; the best-scoring seed then continues
from its step-k state (nothing is recomputed). Cost in transformer evaluations: |S|*k + (T - k) instead of |S|*T.
With |S| = 1 the result is exactly the plain sampler's.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from pico_lightning.config import EvalConfig
from pico_lightning.inference.routing import RoutingCapture, mean_routing, score_routing, token_panels
from pico_lightning.inference.sampler import FillState, decode, denoise, init_state, make_scheduler
from pico_lightning.model.backbone import dit_blocks
from pico_lightning.model.conditioning import TextInputs
from pico_lightning.panels import Layout

# Empty eval.score_blocks: the last 4 double blocks. Capture cost is linear in blocks (19 at full size cost ~2 s at
# |S| = 8). The scores read how B' routes to the other panels by content; at the k early steps B' is mostly noise,
# and in the first blocks its routing follows the rotary positions more than content, so the last double blocks
# (joint text-image attention, the most processed features) are the guess. Which blocks predict final quality
# best at full size is for bench/seed_scorer_study.py on the real weights to decide.
DEFAULT_BLOCKS = 4


def attention_modules(transformer: torch.nn.Module, blocks: list[int]) -> list[torch.nn.Module]:
    """The attention modules of ``blocks`` (indices over double, then single blocks; empty = the last
    ``DEFAULT_BLOCKS`` double blocks, or all of them when there are fewer)."""
    every = [block.attn for block in dit_blocks(transformer)]
    double = len(transformer.transformer_blocks)
    chosen = blocks or list(range(max(0, double - DEFAULT_BLOCKS), double))
    bad = [b for b in chosen if not 0 <= b < len(every)]
    if bad:
        raise ValueError(f"eval.score_blocks: {bad} out of range; the model has {len(every)} blocks")
    return [every[b] for b in chosen]


@contextmanager
def capture_routing(transformer, blocks: list[int], layout: Layout, scale_factor: int, text_len: int):
    """Install capture processors on ``blocks`` for the duration of the block; yields them."""
    modules = attention_modules(transformer, blocks)
    originals = [m.processor for m in modules]
    panels_of_tokens = token_panels(layout, scale_factor)
    captures = [RoutingCapture(panels_of_tokens, layout.num_panels, text_len) for _ in modules]
    for module, capture in zip(modules, captures):
        module.set_processor(capture)
    try:
        yield captures
    finally:
        for module, original in zip(modules, originals):
            module.set_processor(original)


@torch.no_grad()
def fill_episode(
    model,
    grid: torch.Tensor,
    mask: torch.Tensor,
    text: TextInputs,
    num_steps: int,
    guidance: float,
    seeds: list[int],
    layout: Layout,
    scorer: EvalConfig | None = None,
):
    """Fill one episode's target panel -> ((1 or |S|, 3, H, W) images, report dict).

    ``scorer`` None is plain sampling with ``seeds[0]``; then ``grid`` may hold N episodes (N, 3, H, W), denoised as
    one batch, each drawing its noise as a call of its own would (results differ from one-by-one calls by float
    rounding only). The seed scorer fills one episode.
    """
    parts, dtype = model.parts, text.prompt_embeds.dtype
    if scorer is None:
        seeds = seeds[:1]
        episodes = [init_state(parts.autoencoder, g[None], mask, [_generator(seeds[0])], dtype) for g in grid]
        state = FillState.concat(episodes)
    elif len(grid) == 1:
        state = init_state(parts.autoencoder, grid, mask, [_generator(s) for s in seeds], dtype)
    else:
        raise ValueError(f"fill_episode: the seed scorer fills one episode at a time, got {len(grid)}")
    scheduler = make_scheduler(parts.scheduler, num_steps, state.latent_size, grid.device)
    report = {"seeds": [int(s) for s in seeds], "scores": None, "score": None}
    if scorer is not None:
        with capture_routing(
            parts.transformer,
            scorer.score_blocks,
            layout,
            parts.autoencoder.scale_factor,
            text.prompt_embeds.shape[1],
        ) as captures:
            state = denoise(parts.transformer, scheduler, state, text, guidance, range(scorer.scorer_steps))
        routing = mean_routing(captures) if scorer.scorer_steps > 0 else None  # k = 0: keep the first seed
        scores = score_routing(*routing, scorer.routing_score) if routing else torch.zeros(len(seeds))
        best = int(scores.argmax())
        report.update(
            scores=[float(s) for s in scores],
            routing_score=scorer.routing_score,
            scorer_steps=scorer.scorer_steps,
        )
        state = state.select(best)
        start = scorer.scorer_steps
    else:
        best, start = 0, 0
    state = denoise(parts.transformer, scheduler, state, text, guidance, range(start, num_steps))
    evaluations = state.model_evaluations // len(grid)  # per episode: a batch of N episodes counts N per step
    report.update(chosen_seed=report["seeds"][best], model_evaluations=evaluations)
    return decode(parts.autoencoder, state), report


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)
