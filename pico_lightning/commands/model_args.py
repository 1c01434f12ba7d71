"""Arguments shared by `pico infer` and `pico eval`: where the model (and its LoRA) comes from."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_arguments(parser: argparse.ArgumentParser, run_positional: bool = False) -> None:
    """--run RUN_DIR | --model-dir DIR [--lora PATH] | --config YAML (default: the tiny in-process model)."""
    source = parser.add_mutually_exclusive_group()
    if run_positional:
        parser.add_argument("run_dir", nargs="?", help="a run directory written by `pico train`")
    else:
        source.add_argument("--run", dest="run_dir", help="a run directory written by `pico train`")
    source.add_argument(
        "--model-dir", help="a diffusers-format FLUX.1-Fill directory (FluxFillPipeline.save_pretrained)"
    )
    source.add_argument("--config", help="an experiment YAML whose model section to build (default: tiny model)")
    parser.add_argument("--lora", help="LoRA weights: a directory or a pytorch_lora_weights.safetensors file")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="config overrides")


def resolve_model(args: argparse.Namespace):
    """-> (ExperimentConfig, LoRA path or None) for the chosen source; a run directory brings its own LoRA."""
    from pico_lightning.config import ConfigError, load_config

    lora = args.lora
    if args.run_dir:
        run = Path(args.run_dir)
        if not (run / "config.yaml").is_file():
            raise ConfigError(f"{run}: not a run directory (expected {run / 'config.yaml'})")
        cfg = load_config(run / "config.yaml", args.overrides)
        lora = lora or (str(run / "lora") if (run / "lora").is_dir() else None)
    elif args.model_dir:
        cfg = load_config(args.config, [f"model.pretrained_dir={args.model_dir}", *args.overrides])
    else:
        cfg = load_config(args.config, args.overrides)
    return cfg, lora
