"""`pico train EXPERIMENT.yaml [MORE.yaml ...] [key=value ...]`: fit and write a run directory (training/train.py).

Embed the run's prompts first, once: `pico embed EXPERIMENT.yaml [key=value ...]`. `--print-config` prints the
resolved config and stops; `--dry-run` checks the run against its world, data and model without building the model
(pico_lightning/preflight.py), prints the plan and exits 0, or prints one line per problem and exits 1. A fit stopped
by SIGUSR1 (SLURM's warning before the time limit) saves its step, requeues its SLURM job and exits with 138; by
SIGTERM, saves and exits with 143 (see pico_lightning/training/preemption.py). It prints the world, the batch and
the learning rate it uses first; its last line says how a stopped run goes on: the job requeued, or the exact
command that continues it.
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
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check world size, batch, data, suites and the model directory; print the plan; build nothing",
    )
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
    if args.dry_run:
        return _dry_run(cfg)
    from pico_lightning.run_dir import RunDir
    from pico_lightning.training.preemption import Preempted
    from pico_lightning.training.train import fit

    say = rank_zero_only(print)  # every line once, however many ranks srun or torchrun started
    say(f"run directory: {cfg.run.path()}", flush=True)
    say(cfg.train.describe_batch(), flush=True)
    try:
        run = RunDir(fit(cfg))
    except Preempted as stop:
        if rank_zero_only.rank == 0:  # the one rank that requeues
            print(f"pico train: {stop}; {_going_on(stop, args)}", file=sys.stderr, flush=True)
        return stop.exit_code
    say(f"finished: {run.summary}, LoRA in {run.lora}")
    return 0


def _dry_run(cfg) -> int:
    from pico_lightning.preflight import preflight

    found = preflight(cfg)
    for line in found.plan:
        print(line)
    for problem in found.problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"dry run: {len(found.problems)} problem(s); nothing was built or written")
    return 1 if found.problems else 0


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
