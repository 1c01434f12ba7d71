"""`pico prep`: build VisRel shards offline.

pico prep visrel-lite --out data/visrel-lite [--seed 0] [--samples-per-task 12] [--size 128]
pico prep folders RAW_DIR --out data/my-tasks      # RAW_DIR/<category>/<task>/{input,output}/<id>.<ext>
"""

from __future__ import annotations

import argparse


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
    lite.add_argument("--samples-per-task", type=int, default=12)
    lite.add_argument("--size", type=int, default=128, help="picture side in pixels")
    lite.add_argument("--suite-episodes", type=int, default=32, help="episodes per evaluation suite")
    folders = kinds.add_parser("folders", help="raw task folders -> shards")
    folders.add_argument("src", help="RAW_DIR laid out as <category>/<task>/{input,output}/<id>.<ext>")
    folders.add_argument("--out", required=True, help="output directory")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pico_lightning.errors import UserError

    if args.kind == "folders":
        from data_prep.folders import convert_folders

        try:
            summary = convert_folders(args.src, args.out)
        except ValueError as err:
            raise UserError(str(err)) from None
        skipped = {k: len(v) for k, v in summary["skipped"].items()}
        print(f"wrote {summary['written']} pairs of {summary['num_tasks']} tasks to {args.out}; skipped {skipped}")
        for reason, items in summary["skipped"].items():
            for item in items:
                print(f"  skipped ({reason}): {item}")
        return 0
    if args.samples_per_task < 2 or args.size < 16:
        raise UserError("--samples-per-task must be >= 2 and --size >= 16")
    from data_prep.suites import build_suites, write_suites
    from data_prep.visrel_lite import build_visrel_lite

    index = build_visrel_lite(args.out, seed=args.seed, samples_per_task=args.samples_per_task, size=args.size)
    write_suites(args.out, build_suites(seed=args.seed, episodes_per_suite=args.suite_episodes, size=args.size))
    print(f"wrote {index['num_samples']} samples of {len(index['tasks'])} tasks to {args.out} (+ suites/)")
    return 0
