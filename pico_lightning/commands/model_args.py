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
    from pico_lightning.config import ConfigError, load_config

    lora = args.lora
    if args.run_dir and "=" in args.run_dir and not Path(args.run_dir).exists():
        # `pico eval --config X key=value`: argparse gave the optional RUN_DIR positional the first override
        args.overrides, args.run_dir = [args.run_dir, *args.overrides], None
    if lora and not Path(lora).exists():  # before any model loads (a real base takes minutes)
        raise ConfigError(f"--lora {lora}: not found; expected a LoRA directory or its .safetensors file")
    if not (args.run_dir or args.model_dir or args.config):
        raise ConfigError(
            "no model: pass a run (RUN_DIR, or --run RUN_DIR for infer), --model-dir FLUX_FILL_DIR [--lora PATH], "
            "or --config EXPERIMENT.yaml for its base model alone (e.g. experiments/demo.yaml)"
        )
    if args.run_dir:
        run = run_directory(args.run_dir)
        cfg = load_config(run / "config.yaml", args.overrides)
        if not lora and not (run / "lora").is_dir():
            raise ConfigError(
                f"{run}: no lora/ (the run has not finished); write it with `pico export {run} --out {run / 'lora'}` "
                "(from its last checkpoint), or pass --lora PATH"
            )
        lora = lora or str(run / "lora")
    elif args.model_dir:
        cfg = load_config(args.config, [f"model.pretrained_dir={args.model_dir}", *args.overrides])
    else:
        cfg = load_config(args.config, args.overrides)
    return cfg, lora


def run_directory(path: str) -> Path:
    """``path`` as a run directory (one holding config.yaml); a one-line UserError for anything else."""
    from pico_lightning.errors import UserError

    run = Path(path)
    if not run.is_dir():
        raise UserError(f"{run}: not a run directory (no such directory; expected the directory `pico train` writes)")
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run}: not a run directory (no config.yaml; expected the directory `pico train` writes)")
    return run
