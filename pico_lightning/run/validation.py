"""SeedScoredEvaluation: every N training steps and at the end of fit, evaluate the current LoRA with the scorer.

Every rank evaluates its share of the episodes and enters the metric sync; rank zero alone writes
``eval/step_<N>/metrics.json`` and ``gallery.png``, logs ``eval/<suite>/<metric>`` to the loggers and a W&B table
of four-panel pictures (the same episodes and noise every time) with each seed's score.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from pico_lightning.config import ExperimentConfig
from pico_lightning.errors import UserError
from pico_lightning.evaluation.evaluator import EvalOutput, config_items, evaluate
from pico_lightning.evaluation.gallery import gallery_image, gallery_rows, save_png
from pico_lightning.inference.sampler import TextInputs
from pico_lightning.model.backbone import FluxParts
from pico_lightning.panels import Layout


class ModuleModel:
    """The training module seen as an inference model: its live transformer (with LoRA) and its prompt table."""

    def __init__(self, module: pl.LightningModule):
        self.module = module
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(module.scheduler_config)
        self.parts = FluxParts(module.transformer, module.autoencoder, scheduler, "")
        self.device = module.device

    def text(self, prompt: str) -> TextInputs:
        if prompt not in self.module.prompt_index:
            raise UserError(f"eval prompt {prompt!r} has no cached embedding")
        index = self.module.prompt_index[prompt]
        dtype = self.module.transformer.dtype
        return TextInputs(
            self.module.prompt_embeds[index : index + 1].to(dtype),
            self.module.pooled_embeds[index : index + 1].to(dtype),
        )


class SeedScoredEvaluation(pl.Callback):
    def __init__(self, cfg: ExperimentConfig, run_dir: Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.layout = Layout(cfg.data.rows, cfg.data.cols, cfg.data.panel_size)
        self.items = None
        self.last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.cfg.eval.every_n_steps
        step = trainer.global_step
        if every and step and step % every == 0 and step != self.last_step:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self.last_step:
            self.run(trainer, pl_module)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        """Evaluate on every rank, sync, and let rank zero write and log; returns the metrics."""
        self.last_step = trainer.global_step
        if self.items is None:
            self.items = config_items(self.cfg, self.layout, trainer.datamodule)
        was_training = pl_module.training
        pl_module.eval()
        metrics, outputs = evaluate(
            ModuleModel(pl_module),
            self.items,
            self.cfg.eval,
            self.layout,
            self.cfg.model.guidance,
            trainer.global_rank,
            trainer.world_size,
            lambda t: trainer.strategy.reduce(t, reduce_op="sum"),
        )
        pl_module.train(was_training)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        if trainer.is_global_zero:
            self._publish(trainer, metrics, outputs)
        return metrics

    def _publish(self, trainer: pl.Trainer, metrics: dict, outputs: list[EvalOutput]) -> None:
        step = trainer.global_step
        out_dir = self.run_dir / "eval" / f"step_{step}"
        gallery, rows = gallery_rows(outputs, self.layout, self.cfg.eval.gallery_episodes)
        save_png(gallery_image(rows), out_dir / "gallery.png")
        (out_dir / "metrics.json").write_text(json.dumps({"step": step, **metrics}, indent=2))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            if isinstance(logger, pl.loggers.WandbLogger):
                self._log_table(logger, gallery, rows, step)

    @staticmethod
    def _log_table(logger, gallery: list[EvalOutput], rows: list, step: int) -> None:
        import wandb

        data = [
            [
                o.item.suite,
                o.item.task,
                wandb.Image(row),
                o.report["chosen_seed"],
                json.dumps(o.report["scores"]),
            ]
            for o, row in zip(gallery, rows)
        ]
        logger.log_table(
            "eval/gallery",
            columns=["suite", "task", "A|A'|B|B' pred|B' true", "seed", "scores"],
            data=data,
            step=step,
        )
