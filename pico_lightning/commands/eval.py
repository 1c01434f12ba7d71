"""`pico eval`: seed-scored evaluation of a run or a LoRA on the suites; writes metrics.json and gallery.png.

pico eval runs/demo                                   # the run's LoRA, its config's suites
pico eval --config experiments/demo.yaml              # the base model alone (no LoRA)
pico eval --model-dir /ckpt/FLUX.1-Fill-dev --lora lora/ --suite perseg eval.perseg_dir=/data/PerSeg

An evaluation of a run is also a W&B run of its own (unless logging.wandb_mode or WANDB_MODE is disabled): job type
eval, in the run's group, named <run>-eval-seed<eval.seed>, using the run's LoRA artifact; the training run's
W&B summary is left as it is, so evaluations with several eval.seed values compare side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pico_lightning.commands.model_args import add_model_arguments, resolve_model


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
        from pico_lightning.dashboard import log_evaluation

        trained = RunDir(args.run_dir)
        own = Path(lora) == trained.lora  # --lora PATH evaluates another LoRA: not the run's artifact
        log_evaluation(trained, cfg.logging, cfg.eval, metrics, out, trained.lora if own else None)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items() if k.count("/") <= 2}, indent=2))
    print(f"wrote {out / 'metrics.json'} and {out / 'gallery.png'}")
    return 0
