"""`pico sweep`: expand an ablation file into runs of `pico train` and launch them.

    pico sweep experiments/ablations/task_diversity.yaml                   # one run after another, here
    pico sweep experiments/ablations/text.yaml --dry-run                   # print the plan only
    pico sweep experiments/ablations/task_diversity.yaml --launcher slurm  # write + sbatch a job array
    pico sweep experiments/ablations/seed_scorer.yaml --out runs/sweeps/scorer_short train.max_steps=50

Writes SWEEP_DIR/sweep.json and SWEEP_DIR/runs.txt (SWEEP_DIR default runs/sweeps/<sweep name>); runs
live in SWEEP_DIR/runs/<run name>/. Launching again skips finished runs and resumes interrupted ones.
The ablation file format is documented in pico_lightning/sweeps/spec.py.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="expand an ablation into runs and launch them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ablation", metavar="ABLATION.yaml", help="the ablation file (sweep, slurm)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every run")
    parser.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local: train runs one after another here; slurm: one job-array task per run",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="local: print the plan; slurm: write sweep.sbatch without submitting it",
    )
    parser.add_argument("--out", default=None, metavar="SWEEP_DIR", help="sweep directory (default runs/sweeps/NAME)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pico_lightning.commands.outputs import not_a_file
    from pico_lightning.sweeps.launch import launch_sweep

    if args.out:
        not_a_file(Path(args.out), "--out")
    return launch_sweep(args.ablation, args.launcher, args.dry_run, args.out, args.overrides)
