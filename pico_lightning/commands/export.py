"""`pico export RUN_DIR --out DIR`: the run's LoRA in diffusers format (pytorch_lora_weights.safetensors), with a
README.md model card (base, protocol, training, final evaluation, a stock-diffusers snippet).

Reads RUN_DIR/checkpoints/last.ckpt (or --checkpoint), so it works for unfinished runs too; stock diffusers loads
the result with ``FluxFillPipeline.load_lora_weights(DIR)``.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="LoRA in diffusers format",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", help="a run directory written by `pico train`")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--checkpoint", help="a checkpoint file (default RUN_DIR/checkpoints/last.ckpt)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pico_lightning.commands.outputs import not_a_file
    from pico_lightning.config import load_config
    from pico_lightning.run_dir import RunDir
    from pico_lightning.training.checkpoints import export_checkpoint
    from pico_lightning.training.lora_card import write_lora_card

    not_a_file(Path(args.out), "--out")
    run = RunDir.existing(args.run_dir)
    ckpt = Path(args.checkpoint) if args.checkpoint else run.last_checkpoint
    path = export_checkpoint(run.config, ckpt, args.out)
    summary = None if args.checkpoint else run.read_summary()  # the final evaluation describes last.ckpt
    card = write_lora_card(args.out, load_config(run.config), summary)
    print(f"wrote {path} and {card}")
    return 0
