"""Time limits and preemption: a signalled fit saves its current step once and stops; SLURM jobs requeue.

We own resume, not Lightning's SLURM connector. Lightning's auto-requeue saves ``hpc_ckpt_N.ckpt`` from inside the
signal handler, at whatever point of a step the signal lands, and only restores it when ``fit(ckpt_path=None)``;
`pico train` resumes from ``checkpoints/`` instead. So the Trainer gets ``SLURMEnvironment(auto_requeue=False)``
(:func:`cluster_plugins`) and :class:`Preemption` does the work:

- SIGUSR1 (SLURM's warning before the time limit, ``--signal=B:USR1@LEAD`` passed on by our scripts, or
  ``scancel --signal=USR1``) and SIGTERM (the limit itself, preemption, ``scancel``) are only latched
  (pico_lightning/signals.py, armed before anything heavy is imported): the step in flight finishes;
- after each optimizer step the ranks agree whether any of them was signalled (one boolean all-reduce, only when
  world size > 1), and if so every rank saves ``checkpoints/last.ckpt`` at that step, atomically, on rank 0's disk;
- at the next batch or evaluation the fit is ended by :class:`Preempted`, after the step's metrics were logged, so
  ``metrics.jsonl`` and W&B hold every step once; Lightning then closes data workers and loggers;
- `pico train` requeues the job on SIGUSR1 (``scontrol requeue``) and exits with 128 + the signal's number
  (143 for SIGTERM; 130 stays Ctrl-C's). A SIGTERM is not requeued: it is how ``scancel`` stops a job, and SLURM
  requeues preempted jobs itself where the partition says so.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment

from pico_lightning.run_dir import RunDir
from pico_lightning.signals import LATCH

log = logging.getLogger(__name__)


class Preempted(Exception):
    """The fit stopped on a signal after saving ``checkpoint`` at ``step``."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; saved {checkpoint}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Preemption(pl.Callback):
    """Turn SIGUSR1 / SIGTERM into one checkpoint at the current step and a clean stop (see the module doc)."""

    def __init__(self, run: RunDir):
        self.run = run
        self.saved: Preempted | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning has just composed its own SIGTERM handler with ours (it broadcasts from inside the handler):
        ours alone from here. The fit has restored its checkpoint, so Lightning's leftover ``hpc_ckpt_*`` files of
        an older run are stale."""
        LATCH.install()
        if trainer.is_global_zero:
            for stale in self.run.hpc_checkpoints():
                stale.unlink(missing_ok=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Save at the step just taken when any rank was signalled; the last step is left to finish the run."""
        if self.saved is not None or trainer.global_step >= trainer.max_steps > 0:
            return
        signum = self._signal_of_any_rank(trainer)
        if not signum:
            return
        path = self.run.last_checkpoint
        # with the optimizer and the loops; every rank calls it (a collective under FSDP), rank 0 writes
        trainer.save_checkpoint(path, weights_only=False)
        self.saved = Preempted(signum, trainer.global_step, path)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._stop()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.saved is not None:
            raise self.saved

    def _signal_of_any_rank(self, trainer: pl.Trainer) -> int:
        """The highest signal number any rank received (SIGTERM wins over SIGUSR1), 0 for none: one tiny
        all-reduce per step with several ranks, nothing with one."""
        if trainer.world_size == 1:
            return LATCH.received or 0
        received = torch.tensor(LATCH.received or 0, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(received, reduce_op="max"))


def cluster_plugins() -> list:
    """Under SLURM, Lightning's environment with its auto-requeue off (:class:`Preemption` owns signals)."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def requeue_slurm_job() -> str | None:
    """``scontrol requeue`` this SLURM job (the array task, for an array); returns the job id, None outside SLURM.

    The job must be requeueable (``#SBATCH --requeue``, as our scripts set). SLURM then ends this attempt with a
    SIGTERM to every process, which `pico train`'s latch takes (:func:`pico_lightning.signals.in_slurm_job`)."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        return None
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else job
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        log.warning("scontrol requeue %s failed: %s", job, (result.stderr or result.stdout).strip())
        return None
    return job
