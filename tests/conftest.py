"""Shared fixtures: tiny configs and a tiny diffusers FLUX.1-Fill directory, all in tmp_path."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


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
    from diffusers import FluxFillPipeline

    from pico_lightning.config import ModelConfig
    from pico_lightning.model.backbone import build_parts, build_text_encoders

    cfg = ModelConfig(autoencoder="kl")
    parts, text = build_parts(cfg), build_text_encoders(cfg)
    pipe = FluxFillPipeline(
        scheduler=parts.scheduler, vae=parts.autoencoder.vae, transformer=parts.transformer,
        text_encoder=text.text_encoder, tokenizer=text.tokenizer,
        text_encoder_2=text.text_encoder_2, tokenizer_2=text.tokenizer_2,
    )
    path = tmp_path_factory.mktemp("tiny_flux_fill")
    pipe.save_pretrained(path)
    return path
