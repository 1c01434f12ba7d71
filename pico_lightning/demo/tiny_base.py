"""Pretrain the demo's tiny FLUX.1-Fill base on generic inpainting grids and save it as FLUX.1-Fill-dev is saved.

    python -m pico_lightning.demo.tiny_base --out assets/tiny-fill-base     # the shipped base (one thread, ~85 min)
    python -m pico_lightning.demo.tiny_base --out /tmp/base --exemplar-steps 10 --steps 10 --record ""  # a smoke run
    python -m pico_lightning.demo.tiny_base --out DIR --init assets/tiny-fill-base --exemplar-steps 0 --steps 8000

The model is built by the same code as every tiny PICO model (``build_parts`` + ``build_text_encoders`` from
:data:`BASE`: a Fill ``FluxTransformer2DModel`` over the lossless PixelShuffle autoencoder, tiny CLIP and T5), then
*all* its DiT parameters train with the package's flow-matching maths (logit-normal t with FLUX's resolution shift,
loss on the masked tokens) on :mod:`pico_lightning.demo.generic_grids`, never on VisRel, in two phases: exemplar
grids alone
(``--exemplar-steps``: copy or negative, told apart only by A -> A', which teaches the base to read its exemplar),
then the whole generic mix with a share of exemplar grids kept in it (``--steps``, ``--exemplar-share``); why, and
what each choice measured: bench/RESULTS.md. ``--exemplar-steps 0 --steps 2000 --exemplar-share 0 --seed 0`` is the
earlier mix-only base. The result is written with
``FluxFillPipeline.save_pretrained`` plus a ``SHA256SUMS`` manifest that the loader checks. Seeded and
single-process: the same command on the same torch build and thread count writes the same bytes. The wall time and
the loss curve go to ``--record`` (JSON + PNG, default ``docs/tiny_base_pretraining``). ``--init`` goes on from a
saved base (the third line: 8000 more steps of the mix from the shipped base, with fresh data and noise from seed 2;
what that and 16000 gave: bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pico_lightning import flow
from pico_lightning.config import ModelConfig
from pico_lightning.demo.generic_grids import generic_batch
from pico_lightning.model.backbone import (
    MANIFEST,
    ModelDirError,
    build_parts,
    build_text_encoders,
    check_model_dir,
    save_pipeline,
)
from pico_lightning.model.conditioning import (
    fill_condition,
    latent_image_ids,
    pack_latents,
    predict_velocity,
    token_region,
)
from pico_lightning.model.text import encode_prompts

BASE = ModelConfig(preset="demo-base")
"""The architecture (config/presets.py demo-base: 1.86 M DiT parameters, PixelShuffle s=2, 16 T5 tokens, which the
demo's ``model.max_sequence_length`` must match)."""
PANEL = 32
THREADS = 1  # fixed: the saved bytes do not depend on the core count, and one thread is fastest on shared cores


@dataclass(frozen=True)
class Phase:
    """One pretraining stage: ``steps`` AdamW steps at peak ``lr`` (warm-up, then cosine down to 0.1x) on the generic
    mix, of which a share ``exemplar`` are exemplar grids (copy or negative, B' masked: the loss falls only once the
    model reads A -> A'); 1 = exemplar grids only."""

    steps: int
    lr: float
    exemplar: float = 0.0


def pretrain(
    phases: list[Phase],
    batch: int,
    seed: int,
    density: str = "logit_normal",
    log_every: int = 50,
    init: str | None = None,
) -> tuple[dict, list[dict]]:
    """Full-parameter flow matching of a tiny Fill DiT, fresh or the saved base ``init`` (its text encoders too),
    through ``phases`` in order (a 0-step phase is skipped), flow times t from ``density``; returns the pipeline parts
    and the loss curve (steps counted over all phases)."""
    torch.manual_seed(seed)
    cfg = replace(BASE, pretrained_dir=init) if init else BASE
    parts, text = build_parts(cfg), build_text_encoders(cfg)
    transformer = parts.transformer.train().requires_grad_(True)
    embeds, pooled = encode_prompts(text, [""], BASE.sequence_length())[0]
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    side = 2 * PANEL // parts.autoencoder.scale_factor  # latent side of a grid
    shared = (
        embeds.expand(batch, -1, -1),
        pooled.expand(batch, -1),
        latent_image_ids(side, side, torch.device("cpu"), torch.float32),
    )
    curve, done, start = [], 0, time.perf_counter()
    for phase in (phase for phase in phases if phase.steps):
        optimizer = torch.optim.AdamW(transformer.parameters(), lr=phase.lr, weight_decay=0.01)
        schedule = _warmup_cosine(optimizer, phase.steps)
        window = []
        for step in range(1, phase.steps + 1):
            grid, mask = (torch.from_numpy(a) for a in generic_batch(rng, batch, PANEL, phase.exemplar))
            loss = _loss(parts, transformer, grid, mask, generator, density, shared)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            window.append(loss.item())
            if step % log_every == 0 or step == phase.steps:
                seconds = time.perf_counter() - start
                curve.append({"step": done + step, "loss": sum(window) / len(window), "seconds": seconds})
                window = []
                print(f"[tiny_base] step {done + step} loss {curve[-1]['loss']:.4f} {seconds:.0f}s", flush=True)
        done += phase.steps
    transformer.eval().requires_grad_(False)
    return {"parts": parts, "text": text}, curve


def _warmup_cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``steps // 20`` steps, then cosine from 1x down to 0.1x the peak at ``steps``."""
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, s / steps)))
    )


def _loss(parts, transformer, grid, mask, generator, density: str, shared: tuple) -> torch.Tensor:
    """The masked-token flow-matching loss of one batch of grids (B, 3, H, W) and masks (B, 1, H, W); ``shared``:
    the batch's prompt embeddings, pooled embeddings and image rotary ids, the same every step."""
    batch = grid.shape[0]
    x0 = pack_latents(parts.autoencoder.encode(grid))
    condition = fill_condition(parts.autoencoder, grid, mask)
    noise = torch.randn(x0.shape, generator=generator)
    t = flow.sample_timesteps(batch, density, generator)
    t = flow.resolution_shift(t, flow.shift_mu(x0.shape[1], parts.scheduler.config))
    pred = predict_velocity(
        transformer, flow.interpolate(x0, noise, t), condition, t, torch.full((batch,), BASE.guidance), *shared
    )
    region = token_region(mask, parts.autoencoder.scale_factor)
    return flow.flow_matching_loss(pred, flow.velocity_target(x0, noise), region).mean()


def save_base(out: Path, built: dict) -> None:
    """``FluxFillPipeline.save_pretrained`` into ``out``, then the SHA-256 manifest of every file it wrote."""
    save_pipeline(built["parts"], built["text"], out)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out).as_posix()}" for p in files]
    (out / MANIFEST).write_text("\n".join(lines) + "\n")


def write_record(record: Path, args: argparse.Namespace, curve: list[dict], seconds: float) -> None:
    """``record``.json (recipe, wall time, loss curve) and ``record``.png (the curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    record.parent.mkdir(parents=True, exist_ok=True)
    flags = (
        f"--{key.replace('_', '-')} {value}"
        for key, value in vars(args).items()
        if key != "record" and value is not None
    )
    info = {
        # every flag as parsed, defaults included
        "command": f"python -m pico_lightning.demo.tiny_base {' '.join(flags)}",
        "wall_seconds": round(seconds, 1),
        "threads": THREADS,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "curve": curve,
    }
    record.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve])
    if args.exemplar_steps:
        mix = f"mix, {args.exemplar_share:.0%} exemplar grids" if args.exemplar_share else "whole mix"
        ax.axvline(args.exemplar_steps, color="grey", linestyle=":", label=f"exemplar grids | {mix}")
        ax.legend(fontsize=8)
    ax.set(xlabel="step", ylabel="flow-matching loss (masked tokens)", yscale="log")
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))  # five-digit steps must not collide
    ax.set_title(f"tiny Fill base pretraining: {seconds / 60:.1f} min wall, {THREADS} CPU thread", fontsize=9)
    fig.tight_layout()
    fig.savefig(record.with_suffix(".png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (a FluxFillPipeline.save_pretrained layout)")
    parser.add_argument(
        "--exemplar-steps", type=int, default=12000, help="first phase: steps on exemplar grids (copy or negative)"
    )
    parser.add_argument("--exemplar-lr", type=float, default=3e-3, help="first phase: AdamW peak learning rate")
    parser.add_argument("--steps", type=int, default=4000, help="second phase: steps on the generic mix")
    parser.add_argument("--lr", type=float, default=1e-3, help="second phase: AdamW peak learning rate")
    parser.add_argument(
        "--exemplar-share", type=float, default=0.5, help="second phase: share of exemplar grids in the mix (0 to 1)"
    )
    parser.add_argument("--batch", type=int, default=8, help="grids per step")
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the data, noise and initialisation (1: the shipped base's draw)"
    )
    parser.add_argument(
        "--timestep-density", default="logit_normal", choices=flow.DENSITIES, help="density of the flow time t"
    )
    parser.add_argument(
        "--init", default=None, help="start from this saved base (e.g. the shipped one) instead of a fresh DiT"
    )
    parser.add_argument("--record", default="docs/tiny_base_pretraining", help="JSON + PNG path stem ('' = none)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.exemplar_share <= 1.0:
        parser.error(f"--exemplar-share: expected a share from 0 to 1, got {args.exemplar_share}")
    if args.init:
        try:
            check_model_dir(args.init)
        except ModelDirError as err:
            parser.error(f"--init: {err}")
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    phases = [Phase(args.exemplar_steps, args.exemplar_lr, 1.0), Phase(args.steps, args.lr, args.exemplar_share)]
    built, curve = pretrain(phases, args.batch, args.seed, args.timestep_density, init=args.init)
    seconds = time.perf_counter() - start
    save_base(Path(args.out), built)
    if args.record:
        write_record(Path(args.record), args, curve, seconds)
    print(f"[tiny_base] wrote {args.out} in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
