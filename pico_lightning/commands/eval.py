"""`pico eval`: seed-scored evaluation of a run or a LoRA on the suites; writes metrics.json and gallery.png.

pico eval runs/demo                                   # the run's LoRA, its config's suites
pico eval --config experiments/demo.yaml              # the base model alone (no LoRA)
pico eval --model-dir /ckpt/FLUX.1-Fill-dev --lora lora/ --suite perseg eval.perseg_dir=/data/PerSeg
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pico_lightning.commands.model_args import add_model_arguments, resolve_model

if TYPE_CHECKING:  # `pico --help` imports every command module: no config import at the top
    from pico_lightning.config import LoggingConfig
    from pico_lightning.run_dir import RunDir


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="seed-scored evaluation -> metrics.json, gallery.png",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser, run_positional=True)
    parser.add_argument("--suite", action="append", help="suite name (repeatable; default: eval.suites)")
    parser.add_argument("--seeds", type=int, default=None, help="candidate seeds |S| (default eval.num_seeds)")
    parser.add_argument("--out", default=None, help="output directory (default RUN_DIR/eval/final or eval_out)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from pico_lightning.commands.outputs import writable_dir
    from pico_lightning.run_dir import RunDir

    overrides = list(args.overrides)
    if args.suite:
        overrides.append(f"eval.suites=[{','.join(args.suite)}]")
    if args.seeds is not None:
        overrides.append(f"eval.num_seeds={args.seeds}")
    args.overrides = overrides
    cfg, lora = resolve_model(args)
    default = RunDir(args.run_dir).final_eval if args.run_dir else Path("eval_out")
    out = writable_dir(Path(args.out) if args.out else default, "--out")  # now, not after the evaluation
    from pico_lightning.pipeline import run_evaluation

    metrics = run_evaluation(cfg, lora, out)
    if args.run_dir:
        log_evaluation(RunDir(args.run_dir), cfg.logging, metrics)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items() if k.count("/") <= 2}, indent=2))
    print(f"wrote {out / 'metrics.json'} and {out / 'gallery.png'}")
    return 0


def log_evaluation(run_dir: RunDir, logging: LoggingConfig, metrics: Mapping[str, float]) -> None:
    """Put ``metrics`` (eval/... keys) in the summary of the run's own W&B run (its id is in the run directory),
    resumed with job type 'eval'. Summary, not history: the evaluation belongs to the finished run, not to a
    training step, and the training's history stays one row per step; a key the training also logged shows this
    latest value."""
    mode = logging.mode()
    if mode == "disabled":
        return
    import wandb

    from pico_lightning.training.wandb_run import wandb_project, where

    extra = {"entity": logging.entity} if logging.entity else {}
    run = wandb.init(
        dir=str(run_dir.path),
        id=run_dir.wandb_id(create=True),
        resume="allow",
        job_type="eval",
        project=wandb_project(logging),
        group=logging.group or None,
        mode=mode,
        **extra,
    )
    try:
        run.summary.update({k: float(v) for k, v in metrics.items()})
        print(where(run), flush=True)
    finally:
        run.finish()
        wandb.teardown()
