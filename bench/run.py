"""`make bench`: speed ratios measured side by side in one run on the tiny model; prints a table and writes
bench/results.json. Timings are medians over repeats; ratios, not absolute seconds, are what to compare.

    python -m bench.run [--steps 30] [--data DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

GOALS = {
    "step_overhead_ratio": 1.03,
    "loader_wait_fraction": 0.02,
    "sampler_vs_diffusers_ratio": 1.02,
    "seed_scorer_cost_ratio_evals": 1.6,
    "seed_scorer_cost_ratio_seconds": 1.6,
}


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timing_trainer(cfg, steps: int, timer):
    """A CPU Trainer for ``steps`` timed steps after 5 warm-up ones: no logger, checkpoints or progress bar."""
    import lightning.pytorch as pl

    return pl.Trainer(
        max_steps=steps + 5,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        gradient_clip_val=cfg.train.gradient_clip_val,
        use_distributed_sampler=False,
    )


def step_overhead(cfg, steps: int) -> dict:
    """A PicoModule step under Lightning vs a bare loop doing the same forward, backward and AdamW step."""
    from pico_lightning import flow
    from pico_lightning.model.conditioning import token_region
    from pico_lightning.testing import StepTimer, fixed_batch, fixed_loader
    from pico_lightning.training.prompts import embed_prompts
    from pico_lightning.training.train import build_module

    embed_prompts(cfg.model, ["", "Edit"])
    module = build_module(cfg, ["", "Edit"])
    timer = StepTimer(skip=5)
    trainer = timing_trainer(cfg, steps, timer)
    bare_module = build_module(cfg, ["", "Edit"])
    bare_module.configure_model()  # what the Trainer does for `module`
    optimization = bare_module.configure_optimizers()
    optimizer, schedule = optimization["optimizer"], optimization["lr_scheduler"]["scheduler"]
    batch = bare_module.on_before_batch_transfer(fixed_batch(cfg.data.panel_size, cfg.train.batch_size), 0)
    params = [p for p in bare_module.parameters() if p.requires_grad]

    seeds = itertools.count(1)

    def bare_step():
        pred, target = bare_module(
            batch["grid"], batch["mask"], batch["prompt_id"], torch.Generator().manual_seed(next(seeds))
        )
        weight = token_region(batch["mask"], bare_module.autoencoder.scale_factor)
        loss = flow.flow_matching_loss(pred, target, weight).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.gradient_clip_val)
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()

    bare_module.train()  # as Lightning runs it
    for _ in range(5):
        bare_step()
    bare_before = _median_time(bare_step, steps)
    trainer.fit(module, fixed_loader(cfg.data.panel_size, cfg.train.batch_size))
    bare = (bare_before + _median_time(bare_step, steps)) / 2  # timed before and after: drift cancels
    return {
        "lightning_step_s": timer.median(),
        "bare_step_s": bare,
        "step_overhead_ratio": timer.median() / bare,
        "between_steps_fixed_s": timer.median_wait(),
    }


def loader_wait(cfg, steps: int, between_steps_fixed: float) -> dict:
    """Time waiting for data / step time, with the real VisRel DataModule (2 workers) feeding training.

    The gap between one step's end and the next one's start also holds Lightning's own bookkeeping; the same
    gap with an in-memory batch (``between_steps_fixed``) is subtracted, so what remains is waiting for data.
    """
    from pico_lightning.data.datamodule import VisRelDataModule
    from pico_lightning.testing import StepTimer
    from pico_lightning.training.prompts import embed_prompts, run_prompts
    from pico_lightning.training.train import build_module

    datamodule = VisRelDataModule(cfg.data, cfg.train.batch_size)
    prompts = run_prompts(datamodule.prompts())
    embed_prompts(cfg.model, prompts)
    module = build_module(cfg, prompts)
    timer = StepTimer(skip=5)
    trainer = timing_trainer(cfg, steps, timer)
    trainer.fit(module, datamodule=datamodule)
    wait = max(0.0, timer.median_wait() - between_steps_fixed)
    return {
        "between_steps_s": timer.median_wait(),
        "loader_wait_s": wait,
        "loader_wait_fraction": wait / timer.median(),
    }


def sampler_vs_diffusers(tiny_dir: Path, repeats: int, num_steps: int = 28) -> dict:
    """Our 2x2 inference vs the stock FluxFillPipeline, the same grid, prompt embeddings, steps and seed."""
    from pico_lightning.config import ModelConfig
    from pico_lightning.inference.loading import load_inference_model
    from pico_lightning.panels import Layout, target_mask
    from pico_lightning.testing import sample, stock_call

    layout = Layout(2, 2, 64)
    model = load_inference_model(
        ModelConfig(pretrained_dir=str(tiny_dir), text_cache_dir=str(tiny_dir / "text")), device="cpu"
    )
    text = model.text("Edit")
    grid = torch.rand(1, 3, layout.height, layout.width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = target_mask(layout)[None]
    parts = model.parts

    def ours():
        with torch.no_grad():
            sample(parts.transformer, parts.autoencoder, parts.scheduler, grid, mask, text, num_steps, 30.0, 0)

    theirs = stock_call(tiny_dir, grid, mask, text, num_steps)
    ours(), theirs()
    ours_s, theirs_s = _median_time(ours, repeats), _median_time(theirs, repeats)
    return {"ours_s": ours_s, "diffusers_s": theirs_s, "sampler_vs_diffusers_ratio": ours_s / theirs_s}


def seed_scorer_cost(cfg, repeats: int, num_steps: int = 28, seeds: int = 8) -> dict:
    """Seed-scored inference with |S| = 8 (k early steps batched) vs one seed, in evaluations and seconds."""
    from pico_lightning.config import EvalConfig
    from pico_lightning.inference.loading import load_inference_model
    from pico_lightning.inference.seed_scorer import fill_episode
    from pico_lightning.panels import Layout, target_mask

    layout = Layout(2, 2, cfg.data.panel_size)
    model = load_inference_model(cfg.model, device="cpu")
    text = model.text("Edit")
    grid = torch.rand(1, 3, layout.height, layout.width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = target_mask(layout)[None]
    scorer = EvalConfig(num_steps=num_steps, num_seeds=seeds, scorer_steps=cfg.eval.scorer_steps)
    reports = {}

    def run(n):
        _, reports[n] = fill_episode(
            model, grid, mask, text, num_steps, 30.0, list(range(n)), layout, scorer if n > 1 else None
        )

    single, scored = _median_time(lambda: run(1), repeats), _median_time(lambda: run(seeds), repeats)
    return {
        "seed_scorer_cost_ratio_evals": reports[seeds]["model_evaluations"] / reports[1]["model_evaluations"],
        "seed_scorer_cost_ratio_seconds": scored / single,
        "scorer_steps_k": cfg.eval.scorer_steps,
    }


def text_cache(cfg, repeats: int) -> dict:
    """A cached prompt embedding (safetensors read) vs encoding it with the text encoders (tiny here)."""
    from pico_lightning.model.backbone import build_text_encoders
    from pico_lightning.model.text import TextCache, encode_prompts

    encoders = build_text_encoders(cfg.model)
    cache = TextCache(Path(cfg.model.text_cache_dir), "bench", cfg.model.sequence_length(), torch.float32)
    cache.get(["Segment"], lambda: encoders)
    encode_s = _median_time(lambda: encode_prompts(encoders, ["Segment"], cfg.model.sequence_length()), repeats)
    cached_s = _median_time(lambda: cache.get(["Segment"], lambda: encoders), repeats)
    return {"encode_s": encode_s, "cached_s": cached_s, "text_cache_speedup": encode_s / cached_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each inference timing")
    parser.add_argument("--out", default="bench/results.json")
    args = parser.parse_args(argv)
    from pico_lightning.testing import bench_config, tiny_flux_dir

    with tempfile.TemporaryDirectory() as tmp:
        cfg = bench_config(Path(tmp))
        overhead = step_overhead(cfg, args.steps)
        results = {
            **overhead,
            **loader_wait(cfg, args.steps, overhead["between_steps_fixed_s"]),
            **sampler_vs_diffusers(tiny_flux_dir(Path(tmp)), args.repeats),
            **seed_scorer_cost(cfg, args.repeats),
            **text_cache(cfg, args.repeats * 4),
        }
    results["machine"] = f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip()
    results["date"] = date.today().isoformat()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"{'measure':34s} {'value':>10s} {'goal':>8s}")
    for key in (
        "step_overhead_ratio",
        "loader_wait_fraction",
        "sampler_vs_diffusers_ratio",
        "seed_scorer_cost_ratio_evals",
        "seed_scorer_cost_ratio_seconds",
        "text_cache_speedup",
    ):
        goal = GOALS.get(key)
        target = f"<= {goal:.2f}" if goal else ""
        print(f"{key:34s} {results[key]:10.3f} {target:>8s}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
