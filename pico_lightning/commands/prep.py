"""`pico prep`: build VisRel shards offline.

pico prep visrel-lite --out data/visrel-lite [--seed 0] [--samples-per-task 12] [--size 128]
pico prep folders RAW_DIR --out data/my-tasks      # RAW_DIR/<category>/<task>/{input,output}/<id>.<ext>
    [--held-out TASK[,TASK...]]                     # test only: these tasks form the held_out suite
    [--suite NAME=TASK[,TASK...]]...                # suites/NAME.tar from the tasks' val (held out: test) pairs
    [--shards N] [--seed 0]                         # default: enough shards for 128 readers, tasks mixed
pico prep colour-family --out data/colour [--tasks 256] [--held-out 32] [--pairs-per-task 12] [--size 32] [--seed 0]
                                                    # the CPU task-diversity ablation's family (prep/colour_family.py)

An existing, non-empty --out is refused unless --overwrite; then it is replaced wholly, and only once the new
dataset is complete (built beside it, then swapped in).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MAX_SIZE = 2048  # px: VisRel-lite pictures (FLUX panels are 512)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prep",
        help="build VisRel shards (+ eval suites) offline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    lite = kinds.add_parser("visrel-lite", help="the offline VisRel-like demo set and the eval suites")
    lite.add_argument("--out", required=True, help="output directory (shards, index.json, suites/)")
    lite.add_argument("--seed", type=int, default=0)
    lite.add_argument("--samples-per-task", type=int, default=12, help="pairs per task (>= 2)")
    lite.add_argument("--size", type=int, default=128, help=f"picture side in pixels (16 to {MAX_SIZE})")
    lite.add_argument("--suite-episodes", type=int, default=32, help="episodes per evaluation suite (>= 1)")
    folders = kinds.add_parser("folders", help="raw task folders -> shards (+ held-out tasks and eval suites)")
    folders.add_argument("src", help="RAW_DIR laid out as <category>/<task>/{input,output}/<id>.<ext>")
    folders.add_argument("--out", required=True, help="output directory (shards, index.json, suites/)")
    folders.add_argument(
        "--held-out",
        action="append",
        default=[],
        metavar="TASK[,TASK...]",
        help="tasks written for testing only (split test); they form the held_out suite (repeatable)",
    )
    folders.add_argument(
        "--suite",
        action="append",
        default=[],
        metavar="NAME=TASK[,TASK...]",
        help="write suites/NAME.tar from the tasks' evaluation pairs: val when held in, test when held out; "
        "scored as masks when every output is two-valued, else as pictures (repeatable)",
    )
    folders.add_argument(
        "--shards",
        type=int,
        help="shard count (default: 128, one per reader of 4 nodes x 8 GPUs x 4 workers; fewer when the data has "
        "fewer blocks of 2 train pairs of a task, more past 1000 pairs a shard)",
    )
    folders.add_argument("--seed", type=int, default=0, help="picks each suite episode's exemplar")
    family = kinds.add_parser("colour-family", help="hundreds of colour-transform tasks (the CPU diversity ablation)")
    family.add_argument("--out", required=True, help="output directory (shards, index.json)")
    family.add_argument("--tasks", type=int, default=256, help="held-in members (>= 1)")
    family.add_argument("--held-out", type=int, default=32, help="held-out members, test only (>= 0)")
    family.add_argument("--pairs-per-task", type=int, default=12, help="pairs per member (>= 4)")
    family.add_argument("--size", type=int, default=32, help="picture side in pixels (16 to 512)")
    family.add_argument("--seed", type=int, default=0)
    for kind in (lite, folders, family):
        kind.add_argument("--overwrite", action="store_true", help="replace an existing --out directory wholly")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pico_lightning.prep.outdir import check_out_dir

    out, progress = Path(args.out), sys.stderr.isatty()  # a bar for people, none in logs
    if args.kind == "folders":
        check_out_dir(out, args.overwrite, Path(args.src))
        return _folders(args, out, progress)
    check_out_dir(out, args.overwrite)
    if args.kind == "colour-family":
        return _colour_family(args, out)
    return _visrel_lite(args, out, progress)


def _colour_family(args: argparse.Namespace, out: Path) -> int:
    from pico_lightning.errors import UserError
    from pico_lightning.prep.colour_family import build_colour_family
    from pico_lightning.prep.outdir import build_replacing

    for flag, value, minimum, maximum in (
        ("--tasks", args.tasks, 1, 100_000),
        ("--held-out", args.held_out, 0, 100_000),
        ("--pairs-per-task", args.pairs_per_task, 4, 10_000),
        ("--size", args.size, 16, 512),
    ):
        if not minimum <= value <= maximum:
            raise UserError(f"{flag}: expected {minimum} to {maximum}, got {value}")
    family = (args.tasks, args.held_out, args.pairs_per_task, args.size, args.seed)
    shards = build_replacing(out, lambda tmp: build_colour_family(tmp, *family))
    print(f"wrote {args.tasks} held-in and {args.held_out} held-out colour tasks in {len(shards)} shards to {out}")
    return 0


def _folders(args: argparse.Namespace, out: Path, progress: bool) -> int:
    from pico_lightning.errors import UserError
    from pico_lightning.prep.folder_suites import parse_names, parse_suites
    from pico_lightning.prep.folders import CATEGORY_WORDS, convert_folders
    from pico_lightning.prep.outdir import build_replacing

    for flag, value, minimum in (("--shards", args.shards, 1), ("--seed", args.seed, 0)):
        if value is not None and value < minimum:
            raise UserError(f"{flag}: {value} is too small; it must be >= {minimum}")
    try:
        held_out, suites = parse_names(args.held_out, "--held-out"), parse_suites(args.suite)
        summary = build_replacing(
            out, lambda tmp: convert_folders(args.src, tmp, held_out, suites, args.shards, args.seed, progress)
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    skipped = {k: len(v) for k, v in summary["skipped"].items()}
    print(
        f"wrote {summary['written']} pairs of {summary['num_tasks']} tasks in {len(summary['shards'])} shards "
        f"to {args.out}; skipped {skipped}"
    )
    if summary["held_out"]:
        print(f"  held out (test only, the held_out suite): {', '.join(summary['held_out'])}")
    for name, suite in summary["suites"].items():
        print(f"  suite {name} ({suite['kind']}): {suite['num_episodes']} episodes of {', '.join(suite['tasks'])}")
    for reason, items in summary["skipped"].items():
        for item in items:
            print(f"  skipped ({reason}): {item}")
    if summary["skipped"]["unknown_category"]:
        names = ", ".join(f"{family} ({', '.join(words)})" for family, words in CATEGORY_WORDS.items())
        print(f"  category folders must name one family by one of its words: {names}")
    return 0


def _visrel_lite(args: argparse.Namespace, out: Path, progress: bool) -> int:
    from pico_lightning.errors import UserError

    least = {"--samples-per-task": 2, "--size": 16, "--suite-episodes": 1, "--seed": 0}
    values = (args.samples_per_task, args.size, args.suite_episodes, args.seed)
    for (flag, minimum), value in zip(least.items(), values, strict=True):
        if value < minimum:
            raise UserError(f"{flag}: {value} is too small; it must be >= {minimum}")
    if args.size > MAX_SIZE:  # a typo (--size 12800) would run for hours and fill the disk
        raise UserError(f"--size: {args.size} px is too large for this demo set; it must be <= {MAX_SIZE}")
    from pico_lightning.prep.visrel_lite import write_visrel_lite

    index = write_visrel_lite(out, args.seed, args.samples_per_task, args.size, args.suite_episodes, progress)
    print(f"wrote {index['num_samples']} samples of {len(index['tasks'])} tasks to {args.out} (+ suites/)")
    return 0
