"""Training entry point: config -> model parts + LoRA, data, callbacks, Trainer -> fit -> run directory.

    pico train experiments/demo.yaml                                   # CPU, tiny model
    pico train experiments/flux_fill.yaml train.devices=1              # 1 GPU
    torchrun --nproc-per-node 8 -m pico_lightning.cli train experiments/flux_fill.yaml train.devices=8
    srun pico train experiments/flux_fill.yaml train.devices=8 train.num_nodes=4   # SLURM, see experiments/launch/

The run directory (run.dir/run.name) receives config.yaml, metrics.jsonl, checkpoints/ (LoRA + optimizer + loop
state), eval/step_<N>/, lora/ (diffusers format) and summary.json; wandb/ unless W&B is disabled.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from pico_lightning.config import ExperimentConfig
from pico_lightning.data.schema import CATEGORY_PROMPTS
from pico_lightning.errors import UserError
from pico_lightning.model.backbone import FluxParts, build_parts, build_text_encoders
from pico_lightning.model.lora import add_lora
from pico_lightning.model.text import model_text_cache
from pico_lightning.run.artifacts import RunArtifacts
from pico_lightning.run.loggers import build_loggers, finish_wandb
from pico_lightning.run.module import PicoModule


def resume_checkpoint(cfg: ExperimentConfig) -> Path | None:
    """checkpoints/last.ckpt under run.resume=auto; refuse to overwrite a run that has checkpoints otherwise."""
    last = cfg.run.path() / "checkpoints" / "last.ckpt"
    if cfg.run.resume == "auto":
        return last if last.is_file() else None
    if last.is_file():
        raise UserError(
            f"{cfg.run.path()}: this run already has checkpoints; "
            "continue it with run.resume=auto or choose another run.name"
        )
    return None


def prompt_table(cfg: ExperimentConfig, parts: FluxParts, prompts: list[str]) -> dict:
    """Embeddings of every prompt the data can produce, from the on-disk cache (encoders built only on a miss)."""
    return model_text_cache(cfg.model, parts.identity).get(prompts, lambda: build_text_encoders(cfg.model))


def training_prompts(datamodule: pl.LightningDataModule) -> list[str]:
    """Every prompt a run embeds: what the data can produce, plus the family labels the eval suites use."""
    return [*datamodule.prompts(), *CATEGORY_PROMPTS.values()]


def build_module(cfg: ExperimentConfig, prompts: list[str]) -> PicoModule:
    """The frozen base with LoRA attached, wrapped in the LightningModule."""
    parts = build_parts(cfg.model)
    add_lora(parts.transformer, cfg.lora, seed=cfg.train.seed)
    if cfg.train.gradient_checkpointing:
        parts.transformer.enable_gradient_checkpointing()
    return PicoModule(
        parts.transformer,
        parts.autoencoder,
        parts.scheduler.config,
        prompt_table(cfg, parts, prompts),
        cfg.train,
        cfg.model.guidance,
    )


def build_callbacks(cfg: ExperimentConfig, run_dir: Path) -> list[pl.Callback]:
    from pico_lightning.run.validation import SeedScoredEvaluation

    callbacks: list[pl.Callback] = [
        RunArtifacts(cfg, run_dir),
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="step-{step:06d}",
            save_last=True,
            every_n_train_steps=cfg.train.checkpoint_every,
            save_top_k=1,
            save_on_train_epoch_end=False,
        ),
    ]
    if cfg.eval.suites:
        callbacks.append(SeedScoredEvaluation(cfg, run_dir))
        if cfg.eval.every_n_steps:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=run_dir / "checkpoints",
                    filename="best",
                    monitor="eval/score",
                    mode="max",
                    save_top_k=1,
                    every_n_train_steps=cfg.eval.every_n_steps,
                )
            )
    return callbacks


def build_trainer(cfg: ExperimentConfig, run_dir: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    train = cfg.train
    return pl.Trainer(
        max_steps=train.max_steps,
        accelerator=train.accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=train.strategy,
        precision=train.precision,
        accumulate_grad_batches=train.accumulate_grad_batches,
        gradient_clip_val=train.gradient_clip_val or None,
        log_every_n_steps=cfg.logging.log_every_n_steps,
        logger=build_loggers(cfg, run_dir),
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        use_distributed_sampler=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        max_epochs=-1,
    )


def prepare(cfg: ExperimentConfig, datamodule: pl.LightningDataModule | None = None):
    """Everything a fit needs: (module, trainer, datamodule, checkpoint to resume from or None)."""
    from pico_lightning.data.datamodule import VisRelDataModule

    torch.set_float32_matmul_precision("high")
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the frozen base, on purpose
    warnings.filterwarnings("ignore", message=r"You have overridden `on_before_batch_transfer`")  # ours, on purpose
    run_dir = cfg.run.path()
    ckpt = resume_checkpoint(cfg)
    datamodule = datamodule or VisRelDataModule(cfg.data, cfg.train.batch_size)
    module = build_module(cfg, training_prompts(datamodule))
    trainer = build_trainer(cfg, run_dir, build_callbacks(cfg, run_dir))
    return module, trainer, datamodule, ckpt


def fit(cfg: ExperimentConfig, datamodule: pl.LightningDataModule | None = None) -> Path:
    """Train ``cfg`` and return the run directory; ``datamodule`` defaults to VisRel shards from the config."""
    module, trainer, datamodule, ckpt = prepare(cfg, datamodule)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    finally:
        finish_wandb(trainer.loggers)
    return cfg.run.path()
