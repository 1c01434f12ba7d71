"""The training progress bar counts optimizer steps to ``train.max_steps`` (the stream has no epochs to count)."""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """``train 120/800 [..., loss=0.41]`` instead of Lightning's ``Epoch 7/-2`` for an endless stream."""

    def init_train_tqdm(self):
        return _plain_in_a_file(super().init_train_tqdm())

    def init_validation_tqdm(self):
        return _plain_in_a_file(super().init_validation_tqdm())

    def on_train_epoch_start(self, trainer, *_) -> None:
        bar = self.train_progress_bar
        bar.total, bar.n = trainer.max_steps, trainer.global_step
        bar.set_description("train")
        bar.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.is_enabled and (step % self.refresh_rate == 0 or step == trainer.max_steps):
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar once

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: noise beside the loss
        return metrics


def _plain_in_a_file(bar):
    """A bar written to a log file (a SLURM job's) is drawn in ASCII: srun forwards stdout and stderr in chunks that
    can split a multi-byte block character, which leaves the log undecodable as UTF-8."""
    if not bar.disable:  # a disabled bar (ranks other than 0) has no drawing attributes
        bar.ascii = bar.ascii or not sys.stdout.isatty()
    return bar
