"""bench.gpu's inference measures on one built module: our sampler vs the stock FluxFillPipeline over the same
parts, grid, mask, prompt embeddings, steps and seed (seconds, max and mean pixel difference of B'), and the seed
scorer at |S| = 4 and 8 against one seed (seconds ratio and transformer evaluations), and a cached prompt embedding
against encoding it."""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from bench.gpu_model import BenchSetup

GUIDANCE, SEED, SCORER_STEPS = 30.0, 0, 2


def timed(setup: BenchSetup, fn):
    """(result, seconds) of one call, device work included."""
    setup.sync()
    start = time.perf_counter()
    result = fn()
    setup.sync()
    return result, time.perf_counter() - start


def episode(module, setup: BenchSetup, panel_size: int, text_len: int):
    """A random 2x2 grid (from uint8 pixels, so the pipeline's PIL copy is the same picture), its mask, and random
    prompt embeddings in the transformer's dtype."""
    from pico_lightning import panels
    from pico_lightning.model.conditioning import TextInputs

    layout = panels.Layout(2, 2, panel_size)
    pixels = np.random.default_rng(0).integers(0, 256, (layout.height, layout.width, 3), dtype=np.uint8)
    grid = panels.to_tensor(pixels)[None].to(setup.device)
    mask = panels.target_mask(layout)[None].to(setup.device)
    config, dtype = module.parts.transformer.config, module.parts.transformer.dtype
    generator = torch.Generator().manual_seed(1)
    text = TextInputs(
        torch.randn(1, text_len, config.joint_attention_dim, generator=generator).to(setup.device, dtype),
        torch.randn(1, config.pooled_projection_dim, generator=generator).to(setup.device, dtype),
    )
    return layout, pixels, grid, mask, text


def sampler_vs_diffusers(module, setup: BenchSetup, panel_size: int, text_len: int) -> dict:
    """Our sampler and FluxFillPipeline with the module's LoRA attached, each warmed up with 2 steps, then timed once
    at ``inference_steps``; then our sampler with the LoRA fused into the base (:func:`fused_runs`: seconds, and B'
    against the stock pipeline's unfused output). The LoRA's B weights are drawn at random first, so that the LoRA
    moves the output (a fresh LoRA adds zero)."""
    from diffusers import FluxFillPipeline

    from pico_lightning import panels
    from tests.support import sample

    layout, pixels, grid, mask, text = episode(module, setup, panel_size, text_len)
    parts = module.parts
    generator = torch.Generator().manual_seed(2)
    for name, param in parts.transformer.named_parameters():
        if "lora_B" in name:
            param.data.copy_(torch.randn(param.shape, generator=generator) * 0.01)
    pipe = FluxFillPipeline(parts.scheduler, parts.autoencoder.vae, None, None, None, None, parts.transformer)
    pipe.set_progress_bar_config(disable=True)
    mask_image = Image.fromarray((panels.target_mask(layout)[0].numpy() * 255).astype(np.uint8))

    def ours(steps: int) -> torch.Tensor:
        image, _ = sample(
            parts.transformer, parts.autoencoder, parts.scheduler, grid, mask, text, steps, GUIDANCE, SEED
        )
        return (image.float() / 2 + 0.5).clamp(0, 1)  # [-1, 1] -> [0, 1], as the pipeline's "pt" output

    def theirs(steps: int) -> torch.Tensor:
        return pipe(
            image=Image.fromarray(pixels),
            mask_image=mask_image,
            prompt_embeds=text.prompt_embeds,
            pooled_prompt_embeds=text.pooled_prompt_embeds,
            height=layout.height,
            width=layout.width,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            generator=torch.Generator().manual_seed(SEED),
            output_type="pt",
        ).images.float()

    with torch.no_grad():
        ours(2), theirs(2)
        mine, ours_s = timed(setup, lambda: ours(setup.inference_steps))
        stock, theirs_s = timed(setup, lambda: theirs(setup.inference_steps))
        fused, compile_s = fused_runs(parts.transformer, ours, setup)
    target = (slice(None), *layout.cell(layout.num_panels - 1))  # B' (the other panels are the decoded condition)
    diff = (mine[0][target] - stock[0][target]).abs()
    result = {
        "ours_s": ours_s,
        "diffusers_s": theirs_s,
        "sampler_vs_diffusers_ratio": ours_s / theirs_s,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "compile_s": compile_s,
        "steps": setup.inference_steps,
    }
    for name, (image, seconds) in fused.items():
        result[f"{name}_s"], result[f"{name}_vs_diffusers_ratio"] = seconds, seconds / theirs_s
        result[f"{name}_max_abs_diff"] = float((image[0][target] - stock[0][target]).abs().max())
    return result


def fused_runs(transformer, ours, setup: BenchSetup) -> tuple[dict[str, tuple[torch.Tensor, float]], float]:
    """Our sampler with the LoRA fused into the base, as ``pico infer`` samples (inference/loading.py): eager
    (``fused``) and with compiled blocks (``fused_compiled``, ``eval.compile``), each ``(B', seconds)``, and the
    seconds of the first compiled call (2 steps, compiling included). The module is left unfused and eager."""
    from pico_lightning.model.backbone import dit_blocks
    from pico_lightning.model.compilation import compile_blocks

    steps = setup.inference_steps
    transformer.fuse_lora()
    ours(2)
    runs = {"fused": timed(setup, lambda: ours(steps))}
    compile_blocks(transformer)
    compile_s = timed(setup, lambda: ours(2))[1]
    runs["fused_compiled"] = timed(setup, lambda: ours(steps))
    for block in dit_blocks(transformer):
        block._compiled_call_impl = None  # Module.compile's inverse: the later sections measure eager blocks
    transformer.unfuse_lora()
    return runs, compile_s


def seed_scorer(module, setup: BenchSetup, panel_size: int, text_len: int) -> dict:
    """|S| = 4 and 8 with k = 2 scored steps vs one seed: seconds ratio and evaluation counts."""
    from pico_lightning.config import EvalConfig
    from pico_lightning.inference.seed_scorer import fill_episode

    layout, _, grid, mask, text = episode(module, setup, panel_size, text_len)
    steps = setup.inference_steps

    def run(seeds: int):
        scorer = EvalConfig(num_steps=steps, num_seeds=seeds, scorer_steps=SCORER_STEPS) if seeds > 1 else None
        return fill_episode(module, grid, mask, text, steps, GUIDANCE, list(range(seeds)), layout, scorer)[1]

    with torch.no_grad():
        run(8)  # warm-up at the largest batch
        single, single_s = timed(setup, lambda: run(1))
        results = {}
        for seeds in (4, 8):
            report, seconds = timed(setup, lambda seeds=seeds: run(seeds))
            results[str(seeds)] = {
                "seconds_ratio": seconds / single_s,
                "evaluations": report["model_evaluations"],
                "evaluations_ratio": report["model_evaluations"] / single["model_evaluations"],
                "seconds": seconds,
            }
    return {"single_seed_s": single_s, **results}


def text_cache(module, cfg, setup: BenchSetup) -> dict:
    """A cached prompt embedding (a safetensors read) vs encoding the prompt with the run's text encoders (file-less
    ones at the bench's widths), each the median of 20 calls; the module is not used."""
    import statistics
    from pathlib import Path

    from pico_lightning.model.backbone import build_text_encoders
    from pico_lightning.model.text import TextCache, encode_prompts

    encoders, length = build_text_encoders(cfg.model), cfg.model.sequence_length()
    cache = TextCache(Path(cfg.model.text_cache_dir), "bench", length, torch.float32)
    cache.get(["Segment"], lambda: encoders)

    def median_s(fn) -> float:
        return statistics.median(timed(setup, fn)[1] for _ in range(20))

    encode_s = median_s(lambda: encode_prompts(encoders, ["Segment"], length))
    cached_s = median_s(lambda: cache.get(["Segment"], lambda: encoders))
    return {"encode_s": encode_s, "cached_s": cached_s, "text_cache_speedup": encode_s / cached_s}
