"""Shared fixtures: tiny configs and a tiny diffusers FLUX.1-Fill directory, all in tmp_path."""

from __future__ import annotations

import os

import pytest
import torch
from mixed_shards import shards  # noqa: F401 (a fixture: every test module may ask for it)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _name in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY"):
    os.environ.pop(_name, None)  # each test's config decides (logging.*), never a caller's shell
os.environ.setdefault("WANDB_SILENT", "true")


def quiet_trainer(**kwargs):
    """A CPU Lightning Trainer without logger, checkpoints, progress bar or model summary; ``kwargs`` add to it."""
    import lightning.pytorch as pl

    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return pl.Trainer(**{"accelerator": "cpu", **quiet, **kwargs})


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """Tests must not leak the default dtype or a process group into each other."""
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory):
    """A tiny FLUX.1-Fill directory (random init, KL autoencoder) written by FluxFillPipeline.save_pretrained."""
    from support import save_tiny_flux_fill

    return save_tiny_flux_fill(tmp_path_factory.mktemp("tiny_flux_fill"))


@pytest.fixture
def tiny_cfg(tmp_path):
    """A tiny experiment in tmp_path: 16 px panels, W&B off, eval off."""
    from pico_lightning.config import load_config

    return embedded(
        load_config(
            None,
            [
                "data.panel_size=16",
                "train.lr=3e-3",
                "train.max_steps=6",
                "train.accelerator=cpu",
                "train.checkpoint_every=3",
                "eval.suites=[]",
                "logging.wandb_mode=disabled",
                "logging.log_every_n_steps=1",
                f"model.text_cache_dir={tmp_path / 'text'}",
                f"run.dir={tmp_path / 'runs'}",
                "run.name=t",
            ],
        )
    )


def embedded(cfg, prompts=("", "Edit")):
    """``cfg`` after `pico embed`'s step for ``prompts`` (training only reads the text cache)."""
    from pico_lightning.data.catalogue import run_prompts
    from pico_lightning.model.text import embed_prompts

    embed_prompts(cfg.model, run_prompts(list(prompts)))
    return cfg


class FixedDataModule:
    """The smallest DataModule fit() accepts: the fixed batch stream and its prompts."""

    def __new__(cls, **kwargs):
        import lightning.pytorch as pl
        from support import fixed_loader

        class _Module(pl.LightningDataModule):
            def prompts(self):
                return ["", "Edit"]

            def train_dataloader(self):
                return fixed_loader(**kwargs)

        return _Module()


@pytest.fixture(scope="session")
def visrel_tiny(tmp_path_factory):
    """A small VisRel-lite set (6 pairs per task, 32 px) with small eval suites, prepared once per session."""
    from pico_lightning.prep.suites import build_suites, write_suites
    from pico_lightning.prep.visrel_lite import build_visrel_lite

    root = tmp_path_factory.mktemp("visrel_tiny")
    build_visrel_lite(root, seed=0, samples_per_task=6, size=32, progress=False)
    write_suites(root, build_suites(seed=0, episodes_per_suite=4, size=32))
    return root


def tiny_train_overrides(root, tmp_path, name: str) -> list[str]:
    """A few-second `pico train` on ``visrel_tiny`` (prompts already embedded): tiny model, 16 px panels,
    seed-scored eval every 2 steps."""
    return embed_demo_prompts(
        [
            f"data.root={root}",
            "model.pretrained_dir=''",  # the tiny in-process model: tests never depend on the shipped base
            "data.panel_size=16",
            "data.num_workers=0",
            "data.epoch_batches=4",
            "train.accelerator=cpu",
            "train.batch_size=4",
            "train.max_steps=4",
            "train.checkpoint_every=2",
            "eval.every_n_steps=2",
            "eval.suites=[held_in,segmentation]",
            "eval.episodes_per_suite=4",
            "eval.num_steps=2",
            "eval.num_seeds=2",
            "eval.scorer_steps=1",
            "logging.wandb_mode=disabled",
            "logging.log_every_n_steps=1",
            f"model.text_cache_dir={tmp_path / 'text'}",
            f"run.dir={tmp_path / 'runs'}",
            f"run.name={name}",
        ]
    )


def embed_demo_prompts(overrides: list[str]) -> list[str]:
    """Run `pico embed experiments/demo.yaml` with ``overrides`` (what a user does before `pico train`)."""
    from pico_lightning import cli

    assert cli.main(["embed", "experiments/demo.yaml", *overrides]) == 0
    return overrides
