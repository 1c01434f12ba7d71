"""`pico`: the command line. Parses and dispatches only; each command's body lives in ``pico_lightning.commands``.

    pico prep visrel-lite --out data/visrel-lite
    pico train experiments/demo.yaml train.max_steps=50
    pico infer --run runs/demo --exemplar A.png A_OUT.png --query B.png --out out/b.png --seeds 4
    pico eval runs/demo --suite segmentation
    pico sweep experiments/ablations/task_diversity.yaml --launcher slurm --dry-run

Errors a user can cause print one line and exit 2; ``--debug`` shows the traceback instead. Library logs are
silenced; ``pico -v`` (INFO), ``pico -vv`` (DEBUG) or ``PICO_LOG_LEVEL=INFO|DEBUG`` bring them back.
Heavy libraries are imported inside the commands, so ``pico --help`` and argument errors stay fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

COMMANDS = ("prep", "embed", "train", "export", "infer", "eval", "sweep", "report", "config")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error of ours (subcommand parsers inherit it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from pico_lightning import __version__

    parser = Parser(prog="pico", description="PICO: visual in-context learning with a FLUX.1-Fill DiT")
    parser.add_argument("--version", action="version", version=f"pico_lightning {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="library logs: -v INFO, -vv DEBUG (or PICO_LOG_LEVEL)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pico_lightning.commands.{name}").add_parser(subparsers)
    return parser


def configure_environment(log_level: str = "") -> None:
    """Offline, and quiet libraries unless ``log_level`` or $PICO_LOG_LEVEL asks for their logs: set before
    diffusers / transformers are imported."""
    from pico_lightning.errors import UserError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights at run time
    level = (log_level or os.environ.get("PICO_LOG_LEVEL", "")).upper()
    if level:
        if level not in LOG_LEVELS:
            raise UserError(f"PICO_LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
        os.environ["TRANSFORMERS_VERBOSITY"] = os.environ["DIFFUSERS_VERBOSITY"] = level.lower()
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # library chatter would bury our one-line errors
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    # torchao (the optional [quant] extra), once installed, is imported by diffusers itself and logs missing CUDA
    # kernels and torch's Enum-registration notices on a CPU machine: warnings about nothing we use
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    argv = [item for item in argv if item != "--debug"]
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    args.debug = debug
    # key=value overrides may also follow options (argparse fills positionals before the first option)
    overrides = [item for item in extras if "=" in item and not item.startswith("-")]
    if len(overrides) != len(extras) or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    from pico_lightning.errors import UserError

    try:
        configure_environment(("", "INFO", "DEBUG")[min(args.verbose, 2)])
        return args.run(args) or 0
    except KeyboardInterrupt as err:  # Ctrl-C; a training run says what it saved and how to continue
        print(f"pico {args.command}: interrupted{f': {err}' if str(err) else ''}", file=sys.stderr)
        return 130
    except (UserError, OSError, ValueError, KeyError) as err:
        if debug:
            raise
        print(f"pico {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """A user error's message; for anything else, its type and first line (OSError: with the file it names)."""
    from pico_lightning.errors import UserError

    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:  # a full disk: where, not a traceback
        where = f"{err.filename}: " if err.filename is not None else ""
        return f"{where}No space left on device; free some space there or write elsewhere"
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or type(err).__name__} (run with --debug for the traceback)"
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text} (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
