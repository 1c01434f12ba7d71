"""`pico report`: a sweep's results as tables (report.md, report.csv, groups.csv) and metric plots (PNG).

    pico report runs/sweeps/task_diversity
    pico report runs/sweeps/task_diversity --metric psnr --metric miou --out reports/task_diversity

--metric takes a full key (eval/held_out/psnr, eval/seen/denoise/psnr) or a metric name (psnr:
every suite's psnr); default: every suite-level key except episode and task counts (no per-task breakdowns).
Groups (report.md's second table, groups.csv): per swept value, seen / unseen held-in / held-out tasks and the
other suites, mean [min, max] over the seeds beside the copy baseline B' = B.
Plots: metric vs data.num_tasks or data.task_fraction (else the first swept axis), one colour per group, one
line style per data.shots_per_task, mean over seeds with min-max error bars, each baseline dotted.
W&B: the tables and plots are also logged as one run (job type report) in the sweep's group, in the mode the sweep's
runs log in (their config's logging.wandb_mode, WANDB_MODE winning), or --wandb MODE; its files go to OUT/wandb/.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="table + plots from a sweep's runs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a directory written by `pico sweep`")
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME",
        help="metric key or name to report (repeatable; default: every suite-level key)",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (default SWEEP_DIR)")
    parser.add_argument(
        "--wandb",
        choices=("offline", "online", "disabled"),
        default=None,
        metavar="MODE",
        help="W&B mode of the report run: offline, online or disabled (default: as the sweep's runs log; "
        "disabled when their config is not found)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pico_lightning.commands.outputs import not_a_file
    from pico_lightning.sweeps.report import report_wandb, write_report

    if args.out:
        not_a_file(Path(args.out), "--out")
    sweep_dir = Path(args.sweep_dir)
    out = Path(args.out) if args.out else sweep_dir
    logging, mode = report_wandb(sweep_dir, args.wandb)  # a config that does not load stops it before writing
    paths = write_report(sweep_dir, args.metric, out)
    if mode != "disabled":
        from pico_lightning.dashboard import log_report

        log_report(logging, mode, out, paths)
    return 0
