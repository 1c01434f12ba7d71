"""Reading our Lightning checkpoints outside the Trainer: LoRA weights back into a transformer, and export.

A checkpoint's ``state_dict`` holds only the trainable LoRA parameters under their module names
(``transformer.<block>...lora_A.default.weight``); it is always read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from pico_lightning.errors import UserError

PREFIX = "transformer."


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; a missing or corrupt file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as err:
        raise UserError(f"{path}: unreadable checkpoint ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{path}: not a pico_lightning checkpoint (no state_dict)")
    return checkpoint


def load_lora_from_checkpoint(transformer: nn.Module, checkpoint: dict, path: str | Path) -> None:
    """Copy the checkpoint's LoRA tensors into ``transformer`` (LoRA already attached); mismatches are errors."""
    state = {k[len(PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(PREFIX)}
    own = dict(transformer.named_parameters())
    foreign = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if foreign or not state:
        raise UserError(f"{path}: checkpoint LoRA does not fit this model (e.g. {foreign[:2] or 'no LoRA tensors'})")
    transformer.load_state_dict(state, strict=False)


def export_checkpoint(config_path: str | Path, ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Rebuild the run's base + LoRA, load the checkpoint's LoRA and write it in diffusers format."""
    from pico_lightning.config import load_config
    from pico_lightning.model.backbone import build_parts
    from pico_lightning.model.lora import add_lora, export_lora

    cfg = load_config(config_path)
    checkpoint = read_checkpoint(ckpt_path)
    parts = build_parts(cfg.model)
    add_lora(parts.transformer, cfg.lora)
    load_lora_from_checkpoint(parts.transformer, checkpoint, ckpt_path)
    return export_lora(parts.transformer, out_dir)
