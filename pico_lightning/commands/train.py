"""`pico train EXPERIMENT.yaml [MORE.yaml ...] [key=value ...]`: fit and write a run directory (training/train.py).

Embed the run's prompts first, once: `pico embed EXPERIMENT.yaml [key=value ...]`. `--print-config` prints the
resolved config and stops. A fit stopped by SIGUSR1 (SLURM's warning before the time limit) saves its step, requeues
its SLURM job and exits with 138; by SIGTERM, saves and exits with 143 (see pico_lightning/training/preemption.py).
Its last line says how the run goes on: the job requeued, or the exact command that continues it.
"""

from __future__ import annotations

import argparse
import shlex
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
    from pico_lightning.training.preemption import Preempted
    from pico_lightning.training.train import fit

    say = rank_zero_only(print)  # every line once, however many ranks srun or torchrun started
    say(f"run directory: {cfg.run.path()}", flush=True)
    try:
        run_dir = fit(cfg)
    except Preempted as stop:
        if rank_zero_only.rank == 0:  # the one rank that requeues
            print(f"pico train: {stop}; {_going_on(stop, args)}", file=sys.stderr, flush=True)
        return stop.exit_code
    say(f"finished: {run_dir / 'summary.json'}, LoRA in {run_dir / 'lora'}")
    return 0


def _going_on(stop, args: argparse.Namespace) -> str:
    """How a stopped run goes on: its SLURM job requeued on the warning, else the command that continues it."""
    from pico_lightning.signals import in_slurm_job
    from pico_lightning.training.preemption import requeue_slurm_job

    again = f"continue with: {continue_command(args)}"
    if stop.signum != signal.SIGUSR1 or not in_slurm_job():
        return again
    job = requeue_slurm_job()
    return f"requeued SLURM job {job}" if job else f"the job could not requeue itself; {again}"


def continue_command(args: argparse.Namespace) -> str:
    """This run's `pico train` command line with ``run.resume=auto`` (in place of any other run.resume)."""
    words = [*args.experiment, *args.overrides]
    kept = [word for word in words if not word.startswith("run.resume=")]
    return shlex.join(["pico", "train", *kept, "run.resume=auto"])
