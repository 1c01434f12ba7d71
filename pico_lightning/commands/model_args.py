"""Arguments shared by `pico infer` and `pico eval`: where the model (and its LoRA) comes from."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_arguments(parser: argparse.ArgumentParser, run_positional: bool = False) -> None:
    """--run RUN_DIR | --model-dir DIR [--lora PATH] | --config YAML: one is required."""
    source = parser.add_mutually_exclusive_group()
    if run_positional:
        parser.add_argument("run_dir", nargs="?", help="a run directory written by `pico train`")
    else:
        source.add_argument("--run", dest="run_dir", help="a run directory written by `pico train`")
    source.add_argument(
        "--model-dir", help="a diffusers-format FLUX.1-Fill directory (FluxFillPipeline.save_pretrained)"
    )
    source.add_argument(
        "--config",
        action="append",
        help="an experiment YAML whose base model to build, e.g. experiments/demo.yaml (repeat to merge several)",
    )
    parser.add_argument("--lora", help="LoRA weights: a directory or a pytorch_lora_weights.safetensors file")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="config overrides")


def resolve_model(args: argparse.Namespace):
    """-> (ExperimentConfig, LoRA path or None) for the chosen source; a run directory brings its own LoRA.

    UserError when no source is given (no silent random model) or a run has no LoRA to use."""
    from pico_lightning.pipeline import resolve_source

    if args.run_dir and "=" in args.run_dir and not Path(args.run_dir).exists():
        # `pico eval --config X key=value`: argparse gave the optional RUN_DIR positional the first override
        args.overrides, args.run_dir = [args.run_dir, *args.overrides], None
    return resolve_source(args.run_dir, args.model_dir, args.config, args.lora, args.overrides)
