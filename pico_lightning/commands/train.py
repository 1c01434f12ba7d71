"""`pico train EXPERIMENT.yaml [MORE.yaml ...] [key=value ...]`: fit and write a run directory (training/train.py).

Embed the run's prompts first, once: `pico embed EXPERIMENT.yaml [key=value ...]`. `--print-config` prints the
resolved config and stops.
"""

from __future__ import annotations

import argparse

from pico_lightning.commands.experiment_args import add_experiment_arguments, load_experiment


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train PICO's LoRA; writes a run directory")
    add_experiment_arguments(parser, "experiments/demo.yaml train.max_steps=50")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_experiment(args)
    if cfg is None:  # --print-config
        return 0
    from pico_lightning.training.train import fit

    print(f"run directory: {cfg.run.path()}", flush=True)
    run_dir = fit(cfg)
    print(f"finished: {run_dir / 'summary.json'}, LoRA in {run_dir / 'lora'}")
    return 0
