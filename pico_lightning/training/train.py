"""Training entry point: config -> data, module, callbacks, Trainer -> fit -> final evaluation -> run directory.

    pico embed experiments/demo.yaml && pico train experiments/demo.yaml             # CPU, tiny model
    pico train experiments/flux_fill.yaml train.devices=1                            # 1 GPU
    torchrun --nproc-per-node 8 -m pico_lightning.cli train experiments/flux_fill.yaml train.devices=8
    srun pico train experiments/flux_fill.yaml train.devices=8 train.num_nodes=4    # SLURM, see experiments/launch/

The run directory (run.dir/run.name, pico_lightning/run_dir.py) receives config.yaml, metrics.jsonl, checkpoints/
(LoRA + optimizer + loop state; last, step and best), eval/step_<N>/, lora/ (diffusers format) and summary.json;
wandb/ unless W&B is off. Evaluation runs as Lightning validation every eval.every_n_steps and at the last step,
inside the fit; one callback then ends the fit (last checkpoint, lora/, summary.json) and the base is dropped before
Lightning's teardown would copy it to the host. training/lifecycle.py tells what is written when, in order.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from pico_lightning.config import ExperimentConfig
from pico_lightning.data.catalogue import run_prompts
from pico_lightning.evaluation.evaluator import SuitePlan, evaluation_plan
from pico_lightning.model.backbone import check_model_dir
from pico_lightning.model.text import prompt_table
from pico_lightning.run_dir import RunDir
from pico_lightning.signals import LATCH
from pico_lightning.training.attention_backend import AttentionBackend
from pico_lightning.training.checkpoints import AtomicCheckpointIO, resume_checkpoint
from pico_lightning.training.lifecycle import FitEnd, lifecycle_callbacks
from pico_lightning.training.loggers import build_loggers, finish_wandb
from pico_lightning.training.module import PicoModule
from pico_lightning.training.preemption import cluster_plugins
from pico_lightning.training.progress import StepProgressBar
from pico_lightning.training.shared_dir import SharedRunDir
from pico_lightning.training.strategy import build_strategy

KNOWN_NOISE = (  # warnings about choices made on purpose
    r"Found \d+ module\(s\) in eval mode",  # the frozen base
    r"You have overridden `on_before_batch_transfer`",  # ours: prompt ids travel with the batch
    r"Checkpoint directory .* exists and is not empty",  # every resume
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated",  # lightning's _pytree on torch 2.13
    r"The .(val|train)_dataloader. does not have many workers",  # eval items are in memory
    r"You defined a `validation_step` but have no `val_dataloader`",  # eval.suites is empty
    r"It is recommended to use `self.log\(.*sync_dist=True\)`",  # evaluation metrics are synced by torchmetrics
    # FLUX's single block returns its text and image tokens as two views of one tensor. FSDP2 warns that an in-place
    # op on such a view would skip its pre-backward gather; diffusers' FluxTransformer2DModel only reads them out of
    # place, and tests/test_fsdp.py checks that FSDP's losses and LoRA equal DDP's.
    r"FSDP2-wrapped module \(FSDPFluxSingleTransformerBlock\) returned a view",
)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a fit: the message says what was saved and how to continue."""


def build_module(
    cfg: ExperimentConfig,
    prompts: list[str],
    eval_plan: dict[str, SuitePlan] | None = None,
    release_after_training: bool = False,
) -> PicoModule:
    """The LightningModule for ``cfg``; the base + LoRA are built later, in ``configure_model``."""
    return PicoModule(
        cfg.model,
        cfg.train,
        prompt_table(cfg.model, prompts),
        lora=cfg.lora,
        eval_cfg=cfg.eval,
        layout=cfg.data.layout(),
        eval_plan=eval_plan,
        release_after_training=release_after_training,
    )


def build_callbacks(cfg: ExperimentConfig, run: RunDir, validate: bool) -> list[pl.Callback]:
    """The shared-directory check first (no other callback reads or writes the run directory before it), the
    progress bar and attention backend, then the callbacks that write the run directory (lifecycle.py)."""
    return [
        SharedRunDir(run.path),
        StepProgressBar(),
        AttentionBackend(cfg.train.attention_backend),
        *lifecycle_callbacks(cfg, run, validate),
    ]


def build_trainer(cfg: ExperimentConfig, run: RunDir, callbacks: list[pl.Callback], validate: bool) -> pl.Trainer:
    train = cfg.train
    every = cfg.eval.every_n_steps or train.max_steps + 1  # 0: only the final evaluation (run after fit)
    return pl.Trainer(
        max_steps=train.max_steps,
        accelerator=train.accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=build_strategy(train),
        precision=train.precision,
        accumulate_grad_batches=train.accumulate_grad_batches,
        gradient_clip_val=train.gradient_clip_val or None,
        log_every_n_steps=cfg.logging.log_every_n_steps,
        logger=build_loggers(cfg, run),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        default_root_dir=str(run.path),
        use_distributed_sampler=False,
        val_check_interval=every * train.accumulate_grad_batches,  # counted in batches, across data epochs
        check_val_every_n_epoch=None,
        limit_val_batches=1.0 if validate else 0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        max_epochs=-1,
    )


def prepare(cfg: ExperimentConfig, datamodule: pl.LightningDataModule | None = None):
    """Everything a fit needs: (module, trainer, datamodule, checkpoint to resume from or None).

    The evaluation episodes are read here, so a missing suite stops the run before its first step."""
    from pico_lightning.data.datamodule import VisRelDataModule

    run = RunDir(cfg.run.path())
    ckpt = resume_checkpoint(run, cfg.run.resume)
    cfg.train.per_device_batch()  # before anything is built or written: the batch divides by the world
    if cfg.model.pretrained_dir:  # and the weights' directory has the layout
        check_model_dir(cfg.model.pretrained_dir)
    datamodule = datamodule or VisRelDataModule(cfg.data, cfg.train.global_batch(), cfg.eval)
    plan = evaluation_plan(datamodule.eval_items()) if cfg.eval.suites else None
    module = build_module(cfg, run_prompts(datamodule.prompts()), plan, release_after_training=True)
    trainer = build_trainer(cfg, run, build_callbacks(cfg, run, bool(plan)), bool(plan))
    return module, trainer, datamodule, ckpt


def fit(cfg: ExperimentConfig, datamodule: pl.LightningDataModule | None = None) -> Path:
    """Train ``cfg``, evaluate the final step, write summary.json; returns the run directory.

    :class:`~pico_lightning.training.lifecycle.FitEnd` ends the fit inside ``trainer.fit``; a run resumed at its
    last step (it had finished, or a signal stopped its final evaluation) trains nothing, so FitEnd ends it after the
    fit. The launching process holds the run directory's lock for the whole fit (a second `pico train` on the same
    run.name is refused). A fit stopped by SIGUSR1 / SIGTERM raises
    :class:`~pico_lightning.training.preemption.Preempted` once its step is saved and its loggers are closed."""
    run = RunDir(cfg.run.path())
    with fit_settings(), run.lock() if rank_zero_only.rank == 0 else nullcontext():
        module, trainer, datamodule, ckpt = prepare(cfg, datamodule)
        try:
            with LATCH.armed():
                _fit(trainer, module, datamodule, ckpt)
                next(c for c in trainer.callbacks if isinstance(c, FitEnd)).after_fit(trainer, module, datamodule)
        finally:
            finish_wandb(trainer.loggers)
    return run.path


def _fit(trainer: pl.Trainer, module: PicoModule, datamodule, ckpt: Path | None) -> None:
    """``trainer.fit``, with Lightning's exit after Ctrl-C turned into :class:`RunInterrupted`."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except SystemExit:
        if not trainer.interrupted:
            raise
        last = RunDir(trainer.default_root_dir).last_checkpoint
        saved = f"last checkpoint {last}" if last.is_file() else "no checkpoint was written yet"
        raise RunInterrupted(
            f"stopped at step {trainer.global_step}; {saved}; continue with the same command and run.resume=auto"
        ) from None


@contextmanager
def fit_settings() -> Iterator[None]:
    """The process-wide settings of a fit, restored when it ends (a library changes none on import or when building):
    TF32 matmuls on GPUs (float32 matmul precision "high"), W&B's console chatter off, and quiet about choices made
    on purpose and Lightning's banner lines (accelerator, litlogger tip, "max_steps reached"), which would bury the
    lines that matter; Lightning's warnings still show."""
    banner = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    precision, level, silent = torch.get_float32_matmul_precision(), banner.level, os.environ.get("WANDB_SILENT")
    torch.set_float32_matmul_precision("high")
    banner.setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_SILENT", "true")  # read when W&B starts, in the fit
    try:
        with warnings.catch_warnings():
            for message in KNOWN_NOISE:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        torch.set_float32_matmul_precision(precision)
        banner.setLevel(level)
        if silent is None:
            os.environ.pop("WANDB_SILENT", None)
