"""Training from Python: what `pico embed` then `pico train` do, in one call that returns the run directory.

import pico_lightning
run_dir = pico_lightning.train("experiments/demo.yaml", overrides=["train.max_steps=50"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def train(experiment: str | Path | None, overrides: Sequence[str] = ()) -> Path:
    """Load ``experiment`` (a YAML path; None = the defaults) with key=value ``overrides``, embed the prompts the
    text cache lacks (`pico embed`), then fit (`pico train`); returns the run directory (config.yaml, checkpoints/,
    lora/, summary.json, ...)."""
    from pico_lightning.config import load_config
    from pico_lightning.data.catalogue import DatasetCatalogue, run_prompts
    from pico_lightning.model.text import embed_prompts
    from pico_lightning.training.train import fit

    cfg = load_config(experiment, list(overrides))
    embed_prompts(cfg.model, run_prompts(DatasetCatalogue(cfg.data).prompts()))
    return fit(cfg)
