"""Pretrain the demo's tiny FLUX.1-Fill base on generic inpainting grids and save it as FLUX.1-Fill-dev is saved.

    python -m pico_lightning.demo.tiny_base --out assets/tiny-fill-base     # the shipped base (one thread, ~85 min)
    python -m pico_lightning.demo.tiny_base --out /tmp/base --exemplar-steps 10 --steps 10 --record ""  # a smoke run
    python -m pico_lightning.demo.tiny_base --out DIR --init assets/tiny-fill-base --exemplar-steps 0 --steps 8000

The model is built by the same code as every tiny PICO model (``build_parts`` + ``build_text_encoders`` from
:data:`BASE`: a Fill ``FluxTransformer2DModel`` over the lossless PixelShuffle autoencoder, tiny CLIP and T5), then
*all* its DiT parameters train on the Lightning Trainer, in a LightningModule of the demo's own
(:class:`BasePretraining`) made of the library's pieces of a LoRA fit: the one objective
(:func:`pico_lightning.objective.fill_loss`: logit-normal t with FLUX's resolution shift, loss on the masked tokens),
its AdamW and its gradient clipping. The data are :mod:`pico_lightning.demo.generic_grids`, never VisRel, in two
phases: exemplar grids alone (``--exemplar-steps``: copy or negative, told apart only by A -> A', which teaches the
base to read its exemplar), then the whole generic mix with a share of exemplar grids kept in it (``--steps``,
``--exemplar-share``); why, and what each choice measured: bench/RESULTS.md.
``--exemplar-steps 0 --steps 2000 --exemplar-share 0 --seed 0`` is the earlier mix-only base. The result is written
with ``FluxFillPipeline.save_pretrained`` plus a ``SHA256SUMS`` manifest that the loader checks. Seeded and
single-process: the same command on the same torch build and thread count writes the same bytes, and the recipe
reproduces the shipped base (built by an earlier hand-written loop; tests/test_tiny_base.py checks this path against
that loop bit for bit over two short phases). The wall time and the loss curve go to ``--record`` (JSON + PNG,
default ``docs/tiny_base_pretraining``). ``--init`` goes on from a saved base (the third line: 8000 more steps of
the mix from the shipped base, with fresh data and noise from seed 2; what that and 16000 gave: bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, IterableDataset

from pico_lightning import flow
from pico_lightning.config import ModelConfig, TrainConfig
from pico_lightning.demo.generic_grids import generic_batch
from pico_lightning.model.backbone import (
    MANIFEST,
    FluxParts,
    ModelDirError,
    build_parts,
    build_text_encoders,
    check_model_dir,
    save_pipeline,
)
from pico_lightning.model.conditioning import TextInputs
from pico_lightning.model.text import PromptEmbedding, encode_prompts
from pico_lightning.objective import fill_loss
from pico_lightning.training.optim import build_optimizer, clip_gradients

BASE = ModelConfig(preset="small")
"""The architecture (config/presets.py small: 1.86 M DiT parameters, PixelShuffle s=2, 16 T5 tokens, which the
demo's ``model.max_sequence_length`` must match)."""
PANEL = 32
THREADS = 1  # fixed: the saved bytes do not depend on the core count, and one thread is fastest on shared cores
WEIGHT_DECAY = 0.01
GRADIENT_CLIP = 1.0  # the largest gradient norm


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
    and the loss curve (steps counted over all phases).

    Each phase is one ``Trainer.fit`` of the same :class:`BasePretraining`, so a phase starts a fresh optimizer and
    schedule while the weights, the data stream and the noise stream go on."""
    torch.manual_seed(seed)
    cfg = replace(BASE, pretrained_dir=init) if init else BASE
    text = build_text_encoders(cfg)
    prompt = encode_prompts(text, [""], BASE.sequence_length())[0]
    module = BasePretraining(build_parts(cfg), prompt, density, cfg.guidance, torch.Generator().manual_seed(seed))
    rng, curve = np.random.default_rng(seed), _Curve(log_every)
    for phase in (phase for phase in phases if phase.steps):
        module.phase = phase
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=phase.steps,
            gradient_clip_val=GRADIENT_CLIP,
            callbacks=[curve],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers")  # one thread on purpose
            warnings.filterwarnings("ignore", message=r".*no `val_dataloader`")  # pretraining does not evaluate
            trainer.fit(module, DataLoader(_GenericGrids(rng, batch, phase), batch_size=None))
        curve.done += phase.steps
    module.transformer.eval().requires_grad_(False)
    return {"parts": module.parts, "text": text}, curve.points


class BasePretraining(pl.LightningModule):
    """Every DiT parameter of ``parts`` trains on the empty prompt, one :class:`Phase` per fit (:attr:`phase`, set
    before each). Every step's noise and flow times come from one generator stream, as the shipped base was
    pretrained: single-process and never resumed, the pretraining needs no per-step seeds."""

    def __init__(
        self, parts: FluxParts, prompt: PromptEmbedding, density: str, guidance: float, generator: torch.Generator
    ):
        super().__init__()
        self.parts, self.transformer = parts, parts.transformer.train().requires_grad_(True)
        self.text = TextInputs(prompt[0][None], prompt[1][None])  # (1, Lt, D), (1, D)
        self.objective = TrainConfig(timestep_density=density)  # fill_loss reads its flow-time and loss-region knobs
        self.guidance, self.generator = guidance, generator
        self.phase: Phase | None = None

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        grid, mask = batch["grid"], batch["mask"]
        text = self.text.expand(grid.shape[0])
        return fill_loss(self.parts, grid, mask, text, self.generator, self.objective, self.guidance).mean()

    def configure_optimizers(self):
        optimizer = build_optimizer(self.transformer.parameters(), self.phase.lr, WEIGHT_DECAY, "32-true", False)
        schedule = cosine_to_tenth(optimizer, self.phase.steps // 20, self.phase.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip_gradients(optimizer, gradient_clip_val)  # one foreach norm, as a LoRA fit clips


def cosine_to_tenth(optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int) -> LambdaLR:
    """Linear warm-up from 1/``warmup_steps`` of the peak (at least one step), then a cosine from 1x down to 0.1x
    the peak at ``max_steps``."""
    warmup = max(1, warmup_steps)
    return LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, s / max_steps))),
    )


class _GenericGrids(IterableDataset):
    """Exactly ``phase.steps`` batches of generic grids and their masks drawn from ``rng`` (shared by the phases).
    Finite, so the loader never draws a batch ahead past the phase's end."""

    def __init__(self, rng: np.random.Generator, batch: int, phase: Phase):
        self.rng, self.batch, self.phase = rng, batch, phase

    def __iter__(self):
        for _ in range(self.phase.steps):
            grid, mask = (torch.from_numpy(a) for a in generic_batch(self.rng, self.batch, PANEL, self.phase.exemplar))
            yield {"grid": grid, "mask": mask}


class _Curve(pl.Callback):
    """The loss curve: the mean loss of every ``log_every`` steps (and of a phase's last steps), with wall seconds."""

    def __init__(self, log_every: int):
        self.log_every, self.done, self.points, self.window = log_every, 0, [], []
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.window.append((outputs["loss"] if isinstance(outputs, dict) else outputs).item())
        step = trainer.global_step
        if step % self.log_every == 0 or step == trainer.max_steps:
            seconds = time.perf_counter() - self.start
            self.points.append(
                {"step": self.done + step, "loss": sum(self.window) / len(self.window), "seconds": seconds}
            )
            self.window = []
            print(f"[tiny_base] step {self.done + step} loss {self.points[-1]['loss']:.4f} {seconds:.0f}s", flush=True)


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
