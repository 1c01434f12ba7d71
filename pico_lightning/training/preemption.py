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
- at the next batch the fit is ended by :class:`Preempted`, after the step's metrics were logged, so
  ``metrics.jsonl`` and W&B hold every step once; Lightning then closes data workers and loggers;
- an evaluation (minutes for FLUX.1-Fill, longer than SLURM's warning lead) is stopped between two episodes, the
  ranks agreeing the same way before each: the step is saved with that evaluation marked as not started and the
  fit ends at once, before the evaluation logged anything; the resumed run evaluates that step again, in full, and
  logs it once. A step after which an evaluation is due is saved that way, at its evaluation's first episode (a
  checkpoint taken between the step and its evaluation would make Lightning skip that evaluation on the resume);
- the end of a fit (last checkpoint, LoRA export, summary: seconds) is finished, not stopped: a finished run needs
  no requeue, and `pico train` exits 0;
- `pico train` requeues the job on SIGUSR1 (``scontrol requeue``, retried with a short backoff) and exits with
  128 + the signal's number (143 for SIGTERM; 130 stays Ctrl-C's); where no requeue is possible it prints the
  command that continues the run. A SIGTERM is not requeued: it is how ``scancel`` stops a job, and SLURM requeues
  preempted jobs itself where the partition says so.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.trainer.states import TrainerFn

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
        self._stopping_evaluation = False  # the save happens inside an evaluation, which the resumed run redoes

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The fit has restored its checkpoint, so Lightning's leftover ``hpc_ckpt_*`` files of an older run are
        stale."""
        _own_signals(trainer)
        if trainer.is_global_zero:
            for stale in self.run.hpc_checkpoints():
                stale.unlink(missing_ok=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Save at the step just taken when any rank was signalled, unless an evaluation follows it: that one stops
        at its first episode instead, so that the resumed run evaluates this step. The last step is left to finish
        the run; its evaluation, minutes long, can still be stopped."""
        if self.saved is not None or trainer.global_step >= trainer.max_steps > 0:
            return
        signum = self._signal_of_any_rank(trainer)
        if signum and not _evaluates_now(trainer):
            self._save(trainer, signum)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._stop()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # `pico train`'s evaluation of a run resumed at its last step
            _own_signals(trainer)
        self._stop()

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Between evaluation episodes: a signalled evaluation stops here, every rank at the same episode (each has
        as many as the others, data/eval_items.py). Inside a fit the step is saved first, with its evaluation marked
        as not started: the resumed run evaluates that step again, in full. Nothing of the stopped evaluation is
        logged or written (that happens at its end)."""
        signum = 0 if trainer.sanity_checking else self._signal_of_any_rank(trainer)
        if not signum:
            return
        if trainer.state.fn != TrainerFn.FITTING:  # its step is saved already: the next attempt evaluates it
            raise Preempted(signum, trainer.global_step, self.run.last_checkpoint)
        self._stopping_evaluation = True
        self._save(trainer, signum)
        self._stop()

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self._stopping_evaluation:
            _mark_evaluation_unstarted(checkpoint["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"])

    def _save(self, trainer: pl.Trainer, signum: int) -> None:
        path = self.run.last_checkpoint
        # with the optimizer and the loops; every rank calls it (a collective under FSDP), rank 0 writes
        trainer.save_checkpoint(path, weights_only=False)
        self.saved = Preempted(signum, trainer.global_step, path)

    def _stop(self) -> None:
        if self.saved is not None:
            raise self.saved

    def _signal_of_any_rank(self, trainer: pl.Trainer) -> int:
        """The highest signal number any rank received (SIGTERM wins over SIGUSR1), 0 for none: one tiny
        all-reduce per step (and per evaluation episode) with several ranks, nothing with one."""
        if trainer.world_size == 1:
            return LATCH.received or 0
        received = torch.tensor(LATCH.received or 0, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(received, reduce_op="max"))


def _own_signals(trainer: pl.Trainer) -> None:
    """The latch alone handles stop signals. Lightning composes its own SIGTERM handler with it as a fit or a
    validation starts (after the model is built and the checkpoint restored); that one broadcasts from inside the
    handler, and its flag would end the loop after the next step with a SystemExit of its own, which `pico train`
    would report as a Ctrl-C. A SIGTERM it noted is in the latch as well."""
    LATCH.install()
    trainer._signal_connector.received_sigterm = False


def _evaluates_now(trainer: pl.Trainer) -> bool:
    """Whether Lightning evaluates right after the training batch that just ended: its own decision, which it takes
    again after the batch's callbacks (a private method; only ``trainer.should_stop`` could change it, and ours is
    set at the last step only)."""
    loop = trainer.fit_loop
    return loop.epoch_loop._should_check_val_fx(loop._data_fetcher)


def _mark_evaluation_unstarted(progress: dict) -> None:
    """Rewrite the validation loop's progress, saved before the episode ``current.completed`` of an evaluation, as
    saved inside its first episode: Lightning then restarts that evaluation from its start on a resume (a progress
    that says "between two episodes" would make it skip the evaluation, and one that says "after k episodes" makes it
    stop k episodes early)."""
    done = progress["current"]["completed"]
    for counts in (progress["total"], progress["current"]):
        before = counts["completed"] - done  # the episodes counted before this evaluation started
        counts.update(ready=before + 1, started=before + 1, processed=before, completed=before)
    progress["is_last_batch"] = False


def cluster_plugins() -> list:
    """Under SLURM, Lightning's environment with its auto-requeue off (:class:`Preemption` owns signals)."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def requeue_slurm_job(waits_s: tuple[float, ...] = (1.0, 2.0, 4.0)) -> str | None:
    """``scontrol requeue`` this SLURM job (the array task, for an array); returns the job id, None when it was not
    requeued: outside SLURM, no ``scontrol`` (inside a container), or refused every time. A refusal is retried
    after each of ``waits_s`` (a busy slurmctld can time out), each failure logged with scontrol's own words.

    The job must be requeueable (``#SBATCH --requeue``, as our scripts set). SLURM then ends this attempt with a
    SIGTERM to every process, which `pico train`'s latch takes (:func:`pico_lightning.signals.in_slurm_job`)."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        return None
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else job
    for attempt, wait in enumerate((0.0, *waits_s), start=1):
        time.sleep(wait)
        try:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=15)
        except FileNotFoundError:
            log.warning("scontrol requeue %s: no scontrol on this host's PATH (inside a container?)", job)
            return None
        except subprocess.TimeoutExpired:
            result = subprocess.CompletedProcess([], 1, "", "no answer within 15 s")
        if result.returncode == 0:
            return job
        reason = (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
        log.warning("scontrol requeue %s failed (try %d of %d): %s", job, attempt, len(waits_s) + 1, reason)
    return None
