"""The experiment arguments of `pico train` and `pico embed`: files merged in order, overrides, --print-config.

    pico train experiments/demo.yaml my_data.yaml train.max_steps=50 --print-config

Positional arguments ending in .yaml/.yml, or naming an existing file, are experiment files (the first one always
is); the others are ``key=value`` overrides, applied after every file. ``--defaults key=value`` (repeatable) is
for launch scripts: the allocation's shape goes over the first file, which only sets defaults, and under the
user's other files and overrides, which win.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_experiment_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    files = "EXPERIMENT.yaml [MORE.yaml ...] [key=value ...]"
    parser.usage = f"{parser.prog} [-h] [--print-config] [--defaults KEY=VALUE ...] {files}"
    parser.add_argument(
        "experiment",
        nargs="+",
        metavar="EXPERIMENT.yaml",
        help=f"experiment files, merged in order (later wins), then key=value config overrides; e.g. {example}",
    )
    parser.add_argument(
        "--defaults",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a launch script's setting (e.g. the allocation's train.devices): over the first experiment file, under "
        "the other files and overrides",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.set_defaults(overrides=[])  # key=value given after an option land here (cli.main)


def split_experiment(items: list[str]) -> tuple[list[str], list[str]]:
    """(experiment files, overrides) of the positional arguments, each in the order given."""
    files, overrides = [], []
    for i, item in enumerate(items):
        is_file = i == 0 or item.endswith((".yaml", ".yml")) or Path(item).is_file()
        (files if is_file else overrides).append(item)
    return files, overrides


def load_experiment(args: argparse.Namespace):
    """The resolved ExperimentConfig; with --print-config it is printed as YAML and None is returned."""
    from pico_lightning.config import load_config, to_yaml

    files, overrides = split_experiment(args.experiment)
    cfg = load_config(files, [*overrides, *args.overrides], defaults=args.defaults)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return None
    return cfg
