"""Pretrain the demo's tiny FLUX.1-Fill base on generic inpainting grids and save it as FLUX.1-Fill-dev is saved.

    python -m data_prep.tiny_base --out assets/tiny-fill-base             # the shipped base (2 CPU cores)
    python -m data_prep.tiny_base --out /tmp/base --steps 20 --record ""  # a quick smoke run, no record

The model is built by the same code as every tiny PICO model (``build_parts`` + ``build_text_encoders`` from
:data:`BASE`: a Fill ``FluxTransformer2DModel`` over the lossless PixelShuffle autoencoder, tiny CLIP and T5), then
*all* its DiT parameters train with the package's flow-matching maths (logit-normal t with FLUX's resolution shift,
loss on the masked tokens) on :mod:`data_prep.generic_grids`, never on VisRel. The result is written with
``FluxFillPipeline.save_pretrained`` plus a ``SHA256SUMS`` manifest that the loader checks. Seeded and
single-process: the same command on the same torch build and thread count writes the same bytes. The wall time and
the loss curve go to ``--record`` (JSON + PNG, default ``docs/tiny_base_pretraining``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.generic_grids import generic_batch
from pico_lightning import flow
from pico_lightning.config import ModelConfig
from pico_lightning.model.backbone import MANIFEST, build_parts, build_text_encoders, save_pipeline
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


def pretrain(
    steps: int, batch: int, lr: float, seed: int, density: str = "logit_normal", log_every: int = 50
) -> tuple[dict, list[dict]]:
    """Full-parameter flow matching of a fresh tiny Fill DiT, flow times t from ``density``; returns the pipeline
    parts and the loss curve."""
    torch.manual_seed(seed)
    parts, text = build_parts(BASE), build_text_encoders(BASE)
    transformer = parts.transformer.train().requires_grad_(True)
    embeds, pooled = encode_prompts(text, [""], BASE.sequence_length())[0]
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, s / steps)))
    )
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    scale, curve, window, start = parts.autoencoder.scale_factor, [], [], time.perf_counter()
    ids = latent_image_ids(2 * PANEL // scale, 2 * PANEL // scale, torch.device("cpu"), torch.float32)
    for step in range(1, steps + 1):
        grid, mask = (torch.from_numpy(a) for a in generic_batch(rng, batch, PANEL))
        x0 = pack_latents(parts.autoencoder.encode(grid))
        condition = fill_condition(parts.autoencoder, grid, mask)
        noise = torch.randn(x0.shape, generator=generator)
        t = flow.sample_timesteps(batch, density, generator)
        t = flow.resolution_shift(t, flow.shift_mu(x0.shape[1], parts.scheduler.config))
        pred = predict_velocity(
            transformer,
            flow.interpolate(x0, noise, t),
            condition,
            t,
            torch.full((batch,), BASE.guidance),
            embeds.expand(batch, -1, -1),
            pooled.expand(batch, -1),
            ids,
        )
        loss = flow.flow_matching_loss(pred, flow.velocity_target(x0, noise), token_region(mask, scale)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        window.append(loss.item())
        if step % log_every == 0 or step == steps:
            curve.append({"step": step, "loss": sum(window) / len(window), "seconds": time.perf_counter() - start})
            window = []
            print(
                f"[tiny_base] step {step}/{steps} loss {curve[-1]['loss']:.4f} {curve[-1]['seconds']:.0f}s", flush=True
            )
    transformer.eval().requires_grad_(False)
    return {"parts": parts, "text": text}, curve


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

    record.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "command": f"python -m data_prep.tiny_base --out {args.out} --steps {args.steps} --batch {args.batch} "
        f"--lr {args.lr} --seed {args.seed} --timestep-density {args.timestep_density}",
        "wall_seconds": round(seconds, 1),
        "threads": THREADS,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "curve": curve,
    }
    record.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve])
    ax.set(xlabel="step", ylabel="flow-matching loss (masked tokens)", yscale="log")
    ax.set_title(f"tiny Fill base pretraining: {seconds / 60:.1f} min wall, {THREADS} CPU thread", fontsize=9)
    fig.tight_layout()
    fig.savefig(record.with_suffix(".png"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (a FluxFillPipeline.save_pretrained layout)")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=8, help="grids per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, noise and initialisation")
    parser.add_argument(
        "--timestep-density", default="logit_normal", choices=flow.DENSITIES, help="density of the flow time t"
    )
    parser.add_argument("--record", default="docs/tiny_base_pretraining", help="JSON + PNG path stem ('' = none)")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    built, curve = pretrain(args.steps, args.batch, args.lr, args.seed, args.timestep_density)
    seconds = time.perf_counter() - start
    save_base(Path(args.out), built)
    if args.record:
        write_record(Path(args.record), args, curve, seconds)
    print(f"[tiny_base] wrote {args.out} in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
