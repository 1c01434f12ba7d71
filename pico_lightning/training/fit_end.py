"""How a fit ends: one owner, :class:`FitEnd`, and a base dropped before Lightning's teardown could copy it.

Lightning's ``Strategy.teardown`` moves the whole LightningModule to the CPU after ``fit`` (single device and DDP):
for FLUX.1-Fill that is a ~24 GB device-to-host copy on every rank of a node at once, after the last checkpoint
(8 ranks: ~190 GB of host memory). Nothing needs the base by then when the last step has been evaluated and
everything written, so the end of a fit happens inside it, in this order:

1. the last step is evaluated inside the fit: :class:`FitEnd` asks the loop to stop at ``train.max_steps``, which
   makes Lightning validate at that batch, as it does for an early stop (so no ``trainer.validate`` has to follow,
   and the final evaluation also competes for the best checkpoint);
2. ``FitEnd.on_train_end``: ``checkpoints/last.ckpt`` at the final step (ModelCheckpoint writes it only every
   ``train.checkpoint_every`` steps), ``lora/`` (diffusers format), ``summary.json`` and the LoRA as a W&B
   artifact;
3. ``PicoModule.on_train_end`` (``release_after_training``, set by `pico train`) drops the model parts: Lightning
   calls the module's ``on_train_end`` after every callback's, whatever their order.

A fit stopped by a signal raises :class:`~pico_lightning.training.preemption.Preempted` at its next batch or
evaluation episode, so it never reaches ``on_train_end``: it exports nothing and writes no summary (it is not
finished). A signal during ``on_train_end`` is left unanswered: what remains takes seconds, and the run is then
finished. A run resumed at its last step (after it had finished, or from inside its final evaluation) trains no
step and skips ``on_train_end``; `pico train` then ends it with :meth:`FitEnd.end_resumed`.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from pico_lightning.config import ExperimentConfig, to_container
from pico_lightning.files import write_json
from pico_lightning.model.lora import WEIGHTS_NAME, export_lora
from pico_lightning.model.lora_card import write_lora_card
from pico_lightning.training.checkpoints import LAST
from pico_lightning.training.validation import logged_evaluation
from pico_lightning.training.wandb_run import log_lora


class FitEnd(pl.Callback):
    """The end of a fit, in order: final evaluation, last checkpoint, LoRA export, summary, LoRA artifact."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, validate: bool):
        self.cfg, self.run_dir, self.validate = cfg, Path(run_dir), validate
        self.ended = False  # on_train_end ran: this process trained the fit to its end

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.validate and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True  # Lightning validates at a batch that stops the loop

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step % self.cfg.train.checkpoint_every:  # else ModelCheckpoint saved last.ckpt at this step
            trainer.save_checkpoint(self.run_dir / "checkpoints" / LAST, weights_only=False)  # every rank calls it
        export_run_lora(trainer, pl_module, self.run_dir)
        self.report(trainer)
        self.ended = True

    def end_resumed(self, trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule) -> None:
        """The end of a fit resumed at its last step, which trains nothing (Lightning skips ``on_train_end``): the
        final evaluation (again, or for the first time when a signal stopped it), the LoRA (every rank calls it, as
        a fit's end does), the report."""
        if self.validate:
            trainer.validate(pl_module, datamodule=datamodule, verbose=False)
        export_run_lora(trainer, pl_module, self.run_dir)
        self.report(trainer)

    def report(self, trainer: pl.Trainer) -> None:
        """summary.json, the LoRA's card and the LoRA artifact, with the last evaluation (global rank zero)."""
        if not trainer.is_global_zero:
            return
        step, evaluation = trainer.global_step, logged_evaluation(trainer)
        write_summary(self.run_dir, step, evaluation, self.cfg)
        log_lora(trainer.loggers, self.run_dir / "lora", to_container(self.cfg), evaluation, step)


def export_run_lora(trainer: pl.Trainer, pl_module: pl.LightningModule, run_dir: Path) -> None:
    """``lora/`` from the full (gathered) state dict: right under DDP and FSDP alike. Every rank calls it (the
    gather is a collective under FSDP); global rank zero writes."""
    state = trainer.strategy.lightning_module_state_dict()
    if trainer.is_global_zero:
        own = {k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.")}
        export_lora(pl_module.transformer, run_dir / "lora", own)


def write_summary(run_dir: Path, step: int, metrics: dict[str, float], cfg: ExperimentConfig) -> None:
    """summary.json: the run finished, its final step and final evaluation, where its LoRA and checkpoint are;
    then lora/README.md, the LoRA's card with that evaluation."""
    summary = {
        "status": "finished",
        "step": step,
        "eval": {k: float(v) for k, v in metrics.items()},
        "lora": str(run_dir / "lora"),
        "checkpoint": str(run_dir / "checkpoints" / LAST),
    }
    write_json(run_dir / "summary.json", summary)
    if (run_dir / "lora" / WEIGHTS_NAME).is_file():
        write_lora_card(run_dir / "lora", cfg, summary)
