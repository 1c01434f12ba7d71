"""bench.gpu's training rows: one PicoModule step under Lightning vs a bare PyTorch loop on the same module, batch,
optimizer and clipping; peak memory, MFU and samples/s; and the wait for data with the real VisRelDataModule.

Each row builds a fresh module (the package's own build, on the device), runs the bare loop first (warm-up, then
timed steps), frees its optimizer, then fits with Lightning for the same step counts. Both paths wait for the device
at the end of every step, so a step's window holds its own kernels and no more; a row reports the median step.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import warnings
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from bench.gpu_model import BenchSetup, build_lightning, optimizer_and_schedule, release_memory, row_config

PROMPTS = ["", "Edit"]


class StepWindows(pl.Callback):
    """Wall time of the timed steps (after ``warmup``), and the gap between a step's end and the next one's start
    (fetching the batch plus Lightning's own bookkeeping)."""

    def __init__(self, setup: BenchSetup):
        self.setup = setup
        self.ends: list[float] = []
        self.gaps: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx > self.setup.warmup:
            self.gaps.append(time.perf_counter() - self.ends[-1])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.setup.sync()
        self.ends.append(time.perf_counter())

    def step_s(self) -> float:
        return median_step(self.ends, self.setup.warmup)

    def gap_s(self) -> float:
        return sum(self.gaps) / len(self.gaps)


def lora_no_cast(module: pl.LightningModule) -> int:
    """The lora-no-cast lever: stop peft casting each LoRA layer's input to the float32 LoRA weights' dtype. Under
    bf16 autocast the LoRA matmuls run in bf16 either way, so the float32 copy of every input is pure traffic."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.transformer.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    return len(layers)


def bare_loop(module: pl.LightningModule, batch: dict, cfg, setup: BenchSetup) -> tuple[float, list[float]]:
    """(median seconds, losses) of bare steps: the module's own training_step (autocast as Lightning's precision
    does), backward, clip, optimizer and LR step; warm-up steps first. Every step draws the same noise (no Trainer:
    global step 0), so two rows' losses on the same batch compare the models alone."""
    from pico_lightning.model.sdpa import attention_backend
    from pico_lightning.objective import step_autocast
    from pico_lightning.training.optim import clip_gradients

    optimizer, schedule = optimizer_and_schedule(module)
    ends, losses = [], []
    with attention_backend(cfg.train.attention_backend), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"You are trying to `self.log\(\)`")  # no Trainer: logging is off
        for step in range(setup.warmup + setup.timed):
            inputs = move_data_to_device(module.on_before_batch_transfer(copy.deepcopy(batch), 0), setup.device)
            with step_autocast(cfg.train.precision, setup.device.type):
                loss = module.training_step(inputs, step)
            loss.backward()
            losses.append(loss.detach())
            if cfg.train.gradient_clip_val:
                clip_gradients(optimizer, cfg.train.gradient_clip_val)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            setup.sync()
            ends.append(time.perf_counter())
    del optimizer, schedule
    return median_step(ends, setup.warmup), [float(loss) for loss in losses]


def median_step(ends: list[float], warmup: int) -> float:
    """Median seconds between consecutive step ends after ``warmup`` steps: one stalled step (a shared machine,
    a one-off allocation) does not move it."""
    timed = ends[warmup - 1 :] if warmup else ends  # from the end of the last warm-up step
    if len(timed) < 2:
        return math.nan  # no timed step (a profiling pass)
    return statistics.median(b - a for a, b in zip(timed, timed[1:]))


def fit_windows(cfg, setup: BenchSetup, tmp: Path, loader_or_datamodule, prompts: list[str], variant: str = "") -> dict:
    """Build the row's module, time the bare loop (fixed batch only), then a Lightning fit. Returns the step window
    timer, the bare step seconds and losses, and the fit's error (the bare timing survives a failing fit)."""
    from pico_lightning.training.attention_backend import AttentionBackend
    from tests.support import fixed_batch

    windows = StepWindows(setup)
    callbacks = [windows, AttentionBackend(cfg.train.attention_backend)]
    module, trainer = build_lightning(cfg, setup, prompts, callbacks, tmp / "runs" / cfg.run.name)
    if variant == "lora-no-cast":
        lora_no_cast(module)
    plan = module.checkpoint_plan  # train.gradient_checkpointing=auto's choice
    result = {"windows": windows, "bare_step_s": None, "bare_losses": None, "error": None}
    result["checkpointed_blocks"] = len(plan.checkpointed) if plan else None
    fixed = isinstance(loader_or_datamodule, torch.utils.data.DataLoader)
    if fixed:
        batch = fixed_batch(batch_size=cfg.train.global_batch(), panel_size=cfg.data.panel_size)
        result["bare_step_s"], result["bare_losses"] = bare_loop(module, batch, cfg, setup)
    release_memory()
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setup.device)
    try:
        data = {"train_dataloaders": loader_or_datamodule} if fixed else {"datamodule": loader_or_datamodule}
        trainer.fit(module, **data)
    except Exception as err:  # e.g. Lightning refusing to clip a fused optimizer: keep the bare timing
        result["error"] = f"lightning fit: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    return result


def training_row(
    setup: BenchSetup,
    tmp: Path,
    data_root: Path,
    batch: int,
    checkpointing: bool | str,
    compile_: bool,
    variant: str = "",
):
    """One row of the table: Lightning vs bare step, peak memory, samples/s (MFU is added by the caller)."""
    from tests.support import fixed_loader

    cfg = row_config(setup, tmp, batch, checkpointing, compile_, data_root, variant)
    fit = fit_windows(cfg, setup, tmp, fixed_loader(batch_size=batch, panel_size=cfg.data.panel_size), PROMPTS, variant)
    row = {key: fit[key] for key in ("bare_step_s", "bare_losses", "checkpointed_blocks")}
    if fit["error"]:
        return {**row, "error": fit["error"]}
    windows = fit["windows"]
    step = windows.step_s()
    return {
        **row,
        "step_s": step,
        "overhead_ratio": step / fit["bare_step_s"],
        "peak_gb": torch.cuda.max_memory_allocated(setup.device) / 2**30 if setup.device.type == "cuda" else None,
        "samples_per_s": batch / step,
        "between_steps_s": windows.gap_s(),
    }


def loader_wait(setup: BenchSetup, tmp: Path, data_root: Path, fixed_gap_s: float | None) -> dict:
    """Batch 1 with checkpointing, fed by VisRelDataModule over VisRel-lite shards: the gap between steps beyond the
    same gap with an in-memory batch (``fixed_gap_s``, from the matching row), as a fraction of the step."""
    from pico_lightning.data.datamodule import VisRelDataModule

    cfg = row_config(setup, tmp, 1, True, False, data_root)
    datamodule = VisRelDataModule(cfg.data, cfg.train.global_batch())
    fit = fit_windows(cfg, setup, tmp, datamodule, PROMPTS + list(datamodule.prompts()))
    if fit["error"]:
        return {"error": fit["error"]}
    gap, step = fit["windows"].gap_s(), fit["windows"].step_s()
    wait = max(0.0, gap - (fixed_gap_s or 0.0))
    return {"loader_wait_fraction": wait / step, "loader_gap_s": gap, "loader_step_s": step}


def quantized_loss(setup: BenchSetup, tmp: Path, data_root: Path, steps: int = 50) -> dict:
    """The default 24 GB base (``setup.variants[0]``: float8 or int8) against the bf16 base: the losses of ``steps``
    bare steps each (batch 1, checkpointing, uncompiled), on the same batch and noise from the same LoRA init."""
    from tests.support import fixed_batch

    if not setup.variants:
        return {"error": "no 8-bit base on this device (float8 needs compute capability 8.9+, int8 needs torchao)"}
    kind, losses = setup.variants[0], {}
    long = replace(setup, warmup=0, timed=steps)
    for variant in ("", kind):
        cfg = row_config(long, tmp, 1, True, False, data_root, variant)
        module, _ = build_lightning(cfg, setup, PROMPTS, [], tmp / "runs" / cfg.run.name)
        batch = fixed_batch(batch_size=1, panel_size=cfg.data.panel_size)
        losses[variant or "bf16"] = bare_loop(module, batch, cfg, long)[1]
        del module
        release_memory()
    diffs = [q - b for q, b in zip(losses[kind], losses["bf16"])]
    return {
        "kind": kind,
        "losses": losses,
        "max_abs_diff": max(abs(d) for d in diffs),
        "last_10_mean_diff": statistics.mean(diffs[-10:]),
        "last_10_mean_bf16": statistics.mean(losses["bf16"][-10:]),
    }


def prepare_data(setup: BenchSetup, tmp: Path) -> Path:
    """VisRel-lite shards, as `pico prep visrel-lite` writes them, at the panel size the rows train on."""
    from pico_lightning.prep.visrel_lite import build_visrel_lite

    root = tmp / "visrel"
    size = 32 if setup.tiny else 512
    build_visrel_lite(root, seed=0, samples_per_task=4, size=size, progress=False)
    return root


KERNEL_KINDS = (  # (kind, substrings of a CUDA kernel's name), first match wins
    ("attention", ("flash", "fmha", "attention", "efficient")),
    ("matmul", ("gemm", "xmma", "cutlass", "nvjet", "matmul", "::mm", "addmm", "bmm")),
    ("fused (compiled)", ("triton_", "cpp_fused")),  # inductor's kernels: casts, norms and elementwise work fused
    ("conv", ("conv", "implicit", "winograd")),
    ("norm", ("norm",)),
    ("copy/cast", ("copy", "cast", "to_copy", "fill")),
)


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in lowered for k in keys)), "elementwise/other")


def step_profile(module: pl.LightningModule, cfg, setup: BenchSetup) -> dict:
    """Where one bare step of ``module`` spends device time, eager and then with its blocks compiled (what
    ``train.compile`` runs): seconds per kernel kind and the top kernels of each (torch.profiler, one step after a
    warm-up; the compiled warm-up includes compiling, ``compile_s``). The module's blocks stay compiled: profile is
    the last section on the reference module."""
    from pico_lightning.model.compilation import compile_blocks
    from tests.support import fixed_batch

    batch = fixed_batch(batch_size=1, panel_size=cfg.data.panel_size)
    result = {"eager": kernel_table(module, batch, cfg, setup)}
    compile_blocks(module.transformer)
    start = time.perf_counter()
    bare_loop(module, batch, cfg, replace(setup, warmup=1, timed=0))
    result["compile_s"] = time.perf_counter() - start
    result["compiled"] = kernel_table(module, batch, cfg, setup)
    return result


def kernel_table(module: pl.LightningModule, batch: dict, cfg, setup: BenchSetup) -> dict:
    """Device seconds per kernel kind (KERNEL_KINDS) and the 12 top kernels of one bare step after a warm-up step."""
    from torch.profiler import ProfilerActivity, profile

    bare_loop(module, batch, cfg, replace(setup, warmup=1, timed=0))
    activity = ProfilerActivity.CUDA if setup.device.type == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        bare_loop(module, batch, cfg, replace(setup, warmup=0, timed=1))
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0 or activity == ProfilerActivity.CPU]
    times = {
        e.key: (e.self_device_time_total if activity == ProfilerActivity.CUDA else e.self_cpu_time_total) / 1e6
        for e in events
    }
    kinds: dict[str, float] = {}
    for name, seconds in times.items():
        kinds[kernel_kind(name)] = kinds.get(kernel_kind(name), 0.0) + seconds
    top = sorted(times.items(), key=lambda item: -item[1])[:12]
    return {"seconds_by_kind": kinds, "top_kernels": [[name[:120], seconds] for name, seconds in top]}
