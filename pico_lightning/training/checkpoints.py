"""Our Lightning checkpoints: written atomically on any filesystem, chosen for resume, read outside the Trainer.

A checkpoint's ``state_dict`` holds only the trainable LoRA parameters under their module names
(``transformer.<block>...lora_A.default.weight``); it is always read with ``torch.load(weights_only=True)``.
Lightning's own save writes through a temporary file that fsspec may keep on another filesystem (``/tmp``) and then
*copies* over the checkpoint, so a full disk can leave a truncated ``last.ckpt``: :class:`AtomicCheckpointIO` writes
beside the destination and renames instead, and :func:`resume_checkpoint` skips an unreadable file.
``last.ckpt`` at the final step, when ``train.max_steps`` is not a multiple of ``train.checkpoint_every``, is
written by ``FitEnd`` (training/lifecycle.py).
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from pico_lightning.errors import UserError
from pico_lightning.files import atomic_path, failed_write
from pico_lightning.run_dir import RunDir

PREFIX = "transformer."
log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the checkpoint, fsync, rename: never a truncated checkpoint."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            try:
                torch.save(checkpoint, tmp)
            except RuntimeError as err:  # torch's zip writer: a full disk is "unexpected pos ...", not an OSError
                raise failed_write(err, tmp.parent) from err


def is_loadable(path: Path) -> bool:
    """Cheap integrity check: a complete torch zip archive (a truncated file has no central directory)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def resume_checkpoint(run: RunDir, resume: str) -> Path | None:
    """The checkpoint of ``run`` to continue from under ``run.resume=auto``: the newest loadable one of last.ckpt,
    the step checkpoints and Lightning's ``hpc_ckpt_*.ckpt`` beside ``checkpoints/`` (left by an older
    auto-requeued run); an unreadable one is skipped with a warning. ``never`` refuses a run that has checkpoints."""
    candidates = [run.last_checkpoint, *run.step_checkpoints(), *run.hpc_checkpoints()]
    # newest first; at equal times last.ckpt, then the higher step
    age = lambda path: (path.stat().st_mtime, path == run.last_checkpoint, path.name)
    found = sorted((path for path in candidates if path.is_file()), key=age, reverse=True)
    if resume != "auto":
        if found:
            raise UserError(
                f"{run.path}: this run already has checkpoints; "
                "continue it with run.resume=auto or choose another run.name"
            )
        return None
    for path in found:
        if is_loadable(path):
            if path != found[0]:
                log.warning("%s is unreadable (truncated?); resuming from %s", found[0], path.name)
            return path
    if found:
        raise UserError(f"{found[0]}: unreadable checkpoint and no loadable step checkpoint beside it")
    return None


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; a missing or corrupt file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as err:
        raise UserError(f"{path}: unreadable checkpoint ({str(err).strip().splitlines()[0]})") from None
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
