"""`pico train EXPERIMENT.yaml [key=value ...]`: fit and write a run directory (see pico_lightning/training/train.py).

Embed the run's prompts first, once: `pico embed EXPERIMENT.yaml [key=value ...]`.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train PICO's LoRA; writes a run directory")
    parser.add_argument("experiment", help="experiment YAML, e.g. experiments/demo.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_steps=50")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pico_lightning.config import load_config

    cfg = load_config(args.experiment, args.overrides)
    from pico_lightning.training.train import fit

    print(f"run directory: {cfg.run.path()}", flush=True)
    run_dir = fit(cfg)
    print(f"finished: {run_dir / 'summary.json'}, LoRA in {run_dir / 'lora'}")
    return 0
