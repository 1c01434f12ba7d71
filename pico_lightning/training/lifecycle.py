"""A run's life, in the order it happens: what a fit writes into its run directory, and which callback writes it.

pico_lightning/run_dir.py says what each file is; this module says when it is written. Lightning calls the
callbacks of one hook in the order :func:`lifecycle_callbacks` lists them (ModelCheckpoint's always last).

0. ``fit`` (training/train.py) takes the run's lock (:meth:`RunDir.lock`) in the launching process, chooses the
   checkpoint to continue from (``run.resume``; training/checkpoints.py) and builds the Trainer with these callbacks.
1. Start, :class:`RunArtifacts`: ``config.yaml`` at fit start (from then on a failed fit keeps its directory); on a
   resume, ``metrics.jsonl`` cut back to the checkpoint's step, so the history reads as one run.
2. Every step: ``metrics.jsonl`` and W&B rows (training/loggers.py, training/wandb_run.py). A stop signal saves
   ``checkpoints/last.ckpt`` at the step just taken and stops the fit (training/preemption.py).
3. Checkpoints: ``step-NNNNNN.ckpt`` and ``last.ckpt`` every ``train.checkpoint_every`` steps, written atomically
   (training/checkpoints.py), each holding the resolved config (:meth:`RunArtifacts.on_save_checkpoint`).
4. Evaluation, Lightning's validation every ``eval.every_n_steps`` and at the last step: :class:`EvalArtifacts`
   writes ``eval/step_<N>/`` (metrics.json, gallery.png) and a W&B table; ``best.ckpt`` follows ``eval/score``.
5. End of fit, :class:`FitEnd`: the last step is evaluated inside the fit (FitEnd asks the loop to stop at
   ``train.max_steps``, which makes Lightning validate at that batch, as it does for an early stop, so no
   ``trainer.validate`` has to follow and the final evaluation also competes for the best checkpoint); then, in
   ``on_train_end``: ``checkpoints/last.ckpt`` at the final step (ModelCheckpoint writes it only every
   ``train.checkpoint_every`` steps), ``lora/`` (diffusers format), ``summary.json`` (the run is finished), the
   LoRA's model card and the LoRA as a W&B artifact.
6. ``PicoModule.on_train_end`` (``release_after_training``, set by `pico train`) drops the model parts: Lightning
   calls the module's ``on_train_end`` after every callback's. Lightning's ``Strategy.teardown`` then moves the
   whole module to the CPU (single device and DDP): for FLUX.1-Fill a ~24 GB device-to-host copy on every rank of
   a node at once (8 ranks: ~190 GB of host memory), which finds nothing left to copy.
7. After the fit, :meth:`FitEnd.after_fit`: a run resumed after it had finished trained no step and skipped
   ``on_train_end``, so it is evaluated again and its summary written. Then W&B is closed and the lock released.

A fit stopped by a signal raises :class:`~pico_lightning.training.preemption.Preempted` at its next batch, so it
never reaches ``on_train_end``: it exports nothing and writes no summary (it is not finished).
"""

from __future__ import annotations

import json

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from pico_lightning.config import ExperimentConfig, save_config, to_container
from pico_lightning.evaluation.evaluator import EvalOutput
from pico_lightning.evaluation.gallery import gallery_image, gallery_rows, save_png
from pico_lightning.files import write_json
from pico_lightning.model.lora import WEIGHTS_NAME, export_lora
from pico_lightning.panels import Layout
from pico_lightning.run_dir import BEST_CHECKPOINT, STEP_CHECKPOINT, RunDir
from pico_lightning.training.loggers import JsonlLogger
from pico_lightning.training.lora_card import write_lora_card
from pico_lightning.training.preemption import Preemption
from pico_lightning.training.wandb_run import log_lora

PREFIX = "eval/"  # the keys PicoModule logs for an evaluation


def lifecycle_callbacks(cfg: ExperimentConfig, run: RunDir, validate: bool) -> list[pl.Callback]:
    """The callbacks that write the run directory, in the order above (``validate``: evaluation suites exist)."""
    callbacks: list[pl.Callback] = [
        RunArtifacts(cfg, run),
        Preemption(run),
        FitEnd(cfg, run, validate),
        ModelCheckpoint(
            dirpath=run.checkpoints,
            filename=STEP_CHECKPOINT,
            auto_insert_metric_name=False,
            save_last=True,
            every_n_train_steps=cfg.train.checkpoint_every,
            save_top_k=1,
            save_on_train_epoch_end=False,
            enable_version_counter=False,
        ),
    ]
    if validate:
        callbacks.append(EvalArtifacts(run, cfg.eval.gallery_episodes, cfg.data.layout()))
        if cfg.eval.every_n_steps:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=run.checkpoints,
                    filename=BEST_CHECKPOINT,
                    monitor="eval/score",
                    mode="max",
                    save_top_k=1,
                    auto_insert_metric_name=False,
                    save_on_train_epoch_end=False,
                    enable_version_counter=False,
                )
            )
    return callbacks


class RunArtifacts(pl.Callback):
    """config.yaml at fit start (global rank zero), metrics.jsonl cut back on a resume, the config inside every
    checkpoint."""

    def __init__(self, cfg: ExperimentConfig, run: RunDir):
        self.cfg, self.run = cfg, run

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            save_config(self.cfg, self.run.config)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """On a resume, cut metrics.jsonl back to the checkpoint's step (the dead run's later rows go)."""
        for logger in trainer.loggers:
            if isinstance(logger, JsonlLogger):
                logger.cut(trainer.global_step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["pico_config"] = to_container(self.cfg)


def logged_evaluation(trainer: pl.Trainer) -> dict[str, float]:
    """The last evaluation's synced metrics (``eval/...``) as the trainer holds them; empty when none ran."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(PREFIX)}


class EvalArtifacts(pl.Callback):
    """Writes each validation's metrics and gallery under ``eval/step_<N>/`` (global rank zero only).

    Evaluation itself runs in Lightning's validation loop: ``PicoModule.validation_step`` fills one episode and
    returns its :class:`~pico_lightning.evaluation.evaluator.EvalOutput`, every rank fills its share of the fixed
    episodes, and the module logs the metrics synced by torchmetrics at the epoch's end. This callback collects the
    outputs of the gallery episodes as each batch ends, then, once the loop has put the synced metrics in
    ``trainer.callback_metrics``, global rank zero writes them, a gallery of its own first episodes per suite (the
    same episodes and noise every time) and, when W&B is on, a table of four-panel pictures with each seed's score.
    """

    def __init__(self, run: RunDir, gallery_episodes: int, layout: Layout):
        self.run = run
        self.gallery_episodes, self.layout = gallery_episodes, layout
        self.outputs: list[EvalOutput] = []  # this validation's first gallery_episodes outputs per suite

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.outputs = []

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module, outputs: EvalOutput, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        suite = outputs.item.suite
        if not (trainer.is_global_zero and outputs.item.counted):
            return
        if sum(o.item.suite == suite for o in self.outputs) < self.gallery_episodes:
            self.outputs.append(outputs)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        step = trainer.global_step
        gallery, rows = gallery_rows(self.outputs, self.layout, self.gallery_episodes)
        save_png(gallery_image(rows), self.run.eval_gallery(step))
        write_json(self.run.eval_metrics(step), {"step": step, **logged_evaluation(trainer)})
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                _log_table(logger, gallery, rows, step)
        self.outputs = []


def _log_table(logger, gallery: list[EvalOutput], rows: list, step: int) -> None:
    import wandb

    data = [
        [o.item.suite, o.item.task, wandb.Image(row), o.report["chosen_seed"], json.dumps(o.report["scores"])]
        for o, row in zip(gallery, rows)
    ]
    logger.log_table(
        "eval/gallery", columns=["suite", "task", "A|A'|B|B' pred|B' true", "seed", "scores"], data=data, step=step
    )


class FitEnd(pl.Callback):
    """The end of a fit, in order: final evaluation, last checkpoint, LoRA export, summary, LoRA artifact."""

    def __init__(self, cfg: ExperimentConfig, run: RunDir, validate: bool):
        self.cfg, self.run, self.validate = cfg, run, validate
        self.ended = False  # on_train_end ran: this process trained the fit to its end

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.validate and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True  # Lightning validates at a batch that stops the loop

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step % self.cfg.train.checkpoint_every:  # else ModelCheckpoint saved last.ckpt at this step
            trainer.save_checkpoint(self.run.last_checkpoint, weights_only=False)  # every rank calls it
        export_run_lora(trainer, pl_module, self.run)
        self.report(trainer)
        self.ended = True

    def after_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule) -> None:
        """After ``trainer.fit``: a run resumed at its last step (it had finished, or a signal stopped its final
        evaluation) trained nothing and skipped ``on_train_end``, so it ends here: the final evaluation (again, or
        for the first time), the LoRA (every rank calls it, as a fit's end does), the report."""
        if self.ended:
            return
        if self.validate:
            trainer.validate(pl_module, datamodule=datamodule, verbose=False)
        export_run_lora(trainer, pl_module, self.run)
        self.report(trainer)

    def report(self, trainer: pl.Trainer) -> None:
        """summary.json, the LoRA's card and the LoRA artifact, with the last evaluation (global rank zero)."""
        if not trainer.is_global_zero:
            return
        step, evaluation = trainer.global_step, logged_evaluation(trainer)
        summary = self.run.write_summary(step, evaluation)
        if (self.run.lora / WEIGHTS_NAME).is_file():
            write_lora_card(self.run.lora, self.cfg, summary)
        log_lora(trainer.loggers, self.run.lora, to_container(self.cfg), evaluation, step)


def export_run_lora(trainer: pl.Trainer, pl_module: pl.LightningModule, run: RunDir) -> None:
    """``lora/`` from the full (gathered) state dict: right under DDP and FSDP alike. Every rank calls it (the
    gather is a collective under FSDP); global rank zero writes."""
    state = trainer.strategy.lightning_module_state_dict()
    if trainer.is_global_zero:
        own = {k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.")}
        export_lora(pl_module.transformer, run.lora, own)
