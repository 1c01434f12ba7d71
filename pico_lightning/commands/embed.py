"""`pico embed EXPERIMENT.yaml [key=value ...]`: embed every prompt a run can use, once, before `pico train`.

Training never builds the text encoders (T5-XXL alone is 9 GB per process): this step does, in one process, and
fills the on-disk cache (model.text_cache_dir) that every rank of `pico train` then reads.
"""

from __future__ import annotations

import argparse

from pico_lightning.commands.experiment_args import add_experiment_arguments, load_experiment


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("embed", help="embed the run's prompts into the text cache (before pico train)")
    add_experiment_arguments(parser, "experiments/flux_fill.yaml (the same files and overrides as for pico train)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Embed; a stop signal (SLURM's time-limit warning) waits for the cache to be written, then exits 128 + it."""
    from pico_lightning.signals import LATCH, in_slurm_job

    with LATCH.armed(keep=in_slurm_job()):
        _embed(args)
    return 128 + LATCH.received if LATCH.received else 0


def _embed(args: argparse.Namespace) -> None:
    cfg = load_experiment(args)
    if cfg is None:  # --print-config
        return
    from pico_lightning.data.catalogue import DatasetCatalogue, run_prompts
    from pico_lightning.model.text import embed_prompts

    prompts = run_prompts(DatasetCatalogue(cfg.data).prompts())
    encoded = embed_prompts(cfg.model, prompts)
    print(f"{len(prompts)} prompts embedded ({encoded} new, {len(prompts) - encoded} already cached)")
