"""`pico`: the command line. Parses and dispatches only; each command's body lives in ``pico_lightning.commands``.

    pico prep visrel-lite --out data/visrel-lite
    pico train experiments/demo.yaml train.max_steps=50
    pico infer --run runs/demo --exemplar A.png A_OUT.png --query B.png --out out/b.png --seeds 4
    pico eval runs/demo --suite segmentation
    pico sweep experiments/ablations/task_diversity.yaml --launcher slurm --dry-run

Errors a user can cause print one line and exit 2; ``--debug`` shows the traceback instead.
Heavy libraries are imported inside the commands, so ``pico --help`` and argument errors stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ("prep", "train", "export", "infer", "eval", "sweep", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pico", description="PICO: visual in-context learning with a FLUX.1-Fill DiT")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pico_lightning.commands.{name}").add_parser(subparsers)
    return parser


def configure_environment() -> None:
    """Offline, and quiet libraries: set before diffusers / transformers are imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights at run time
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # library chatter would bury our one-line errors
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def main(argv: list[str] | None = None) -> int:
    configure_environment()
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    # key=value overrides may also follow options (argparse fills positionals before the first option)
    overrides = [item for item in extras if "=" in item and not item.startswith("-")]
    if len(overrides) != len(extras) or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    from pico_lightning.errors import UserError

    try:
        return args.run(args) or 0
    except (UserError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        if args.debug:
            raise
        print(f"pico {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pico {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
