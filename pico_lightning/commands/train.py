"""`pico train EXPERIMENT.yaml [MORE.yaml ...] [key=value ...]`: fit and write a run directory (training/train.py).

Embed the run's prompts first, once: `pico embed EXPERIMENT.yaml [key=value ...]`. `--print-config` prints the
resolved config and stops. A fit stopped by SIGUSR1 (SLURM's warning before the time limit) saves its step, requeues
its SLURM job and exits with 138; by SIGTERM, saves and exits with 143 (see pico_lightning/training/preemption.py).
"""

from __future__ import annotations

import argparse
import signal
import sys

from pico_lightning.commands.experiment_args import add_experiment_arguments, load_experiment


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train PICO's LoRA; writes a run directory")
    add_experiment_arguments(parser, "experiments/demo.yaml train.max_steps=50")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pico_lightning.signals import LATCH, in_slurm_job

    # armed from the first moment: a signal that comes while torch is imported is kept for the fit to act on
    with LATCH.armed(keep=in_slurm_job()):
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from lightning.pytorch.utilities import rank_zero_only

    cfg = load_experiment(args)
    if cfg is None:  # --print-config
        return 0
    from pico_lightning.run_dir import RunDir
    from pico_lightning.training.preemption import Preempted, requeue_slurm_job
    from pico_lightning.training.train import fit

    say = rank_zero_only(print)  # every line once, however many ranks srun or torchrun started
    say(f"run directory: {cfg.run.path()}", flush=True)
    try:
        run = RunDir(fit(cfg))
    except Preempted as stop:
        requeued = requeue_slurm_job() if rank_zero_only.rank == 0 and stop.signum == signal.SIGUSR1 else None
        again = f"requeued SLURM job {requeued}" if requeued else "continue with the same command and run.resume=auto"
        say(f"pico train: {stop}; {again}", file=sys.stderr, flush=True)
        return stop.exit_code
    say(f"finished: {run.summary}, LoRA in {run.lora}")
    return 0
