"""peft LoRA on the Fill DiT: attach, read/write our state, and export/import in diffusers format.

Targets are module-name suffixes matched only inside ``transformer_blocks`` and ``single_transformer_blocks`` and
expanded to full names, so the embedders and the final ``proj_out`` stay frozen unless ``lora.extra_modules`` names
them (the demo adapts ``x_embedder`` and ``proj_out``). Export writes
``pytorch_lora_weights.safetensors`` with the adapter metadata, so alpha != rank survives a stock
``FluxFillPipeline.load_lora_weights``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import FluxFillPipeline
from peft import LoraConfig as PeftLoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from torch import nn

from pico_lightning.config import LoraConfig
from pico_lightning.errors import UserError
from pico_lightning.files import umask

ADAPTER = "default"
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.\d+\.(.+)$")


def target_module_names(transformer: nn.Module, suffixes: list[str], extra: list[str] = ()) -> list[str]:
    """Full names of the Linear layers inside the blocks whose in-block name is one of ``suffixes``, plus the
    ``extra`` layers named in full."""
    wanted = set(suffixes)
    linear = {name for name, module in transformer.named_modules() if isinstance(module, nn.Linear)}
    names = [name for name in sorted(linear) if (match := _BLOCK.match(name)) and match.group(2) in wanted]
    if not names:
        raise UserError(f"lora.target_modules: none of {sorted(wanted)} names a Linear layer inside the DiT's blocks")
    unknown = [name for name in extra if name not in linear]
    if unknown:
        raise UserError(f"lora.extra_modules: {unknown} are not Linear layers of the DiT")
    return names + list(extra)


def add_lora(transformer: nn.Module, cfg: LoraConfig, seed: int = 0) -> int:
    """Freeze the base, attach the adapter (init seeded: every process and run starts alike), keep LoRA weights in
    float32; returns the trainable-parameter count."""
    transformer.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(
            PeftLoraConfig(
                r=cfg.rank,
                lora_alpha=cfg.alpha,
                lora_dropout=cfg.dropout,
                init_lora_weights="gaussian",
                target_modules=target_module_names(transformer, cfg.target_modules, cfg.extra_modules),
            )
        )
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    for param in trainable:
        param.data = param.data.float()
    return sum(p.numel() for p in trainable)


def export_lora(transformer: nn.Module, out_dir: str | Path, state_dict: dict | None = None) -> Path:
    """Write ``out_dir/pytorch_lora_weights.safetensors`` in diffusers format, atomically (tmp dir + rename).

    ``state_dict``: the transformer's full state dict when its parameters are sharded (gathered under FSDP);
    by default the transformer's own."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    FluxFillPipeline.save_lora_weights(
        tmp,
        transformer_lora_layers=get_peft_model_state_dict(transformer, state_dict, adapter_name=ADAPTER),
        transformer_lora_adapter_metadata=transformer.peft_config[ADAPTER].to_dict(),
    )
    out_dir.mkdir(exist_ok=True)
    os.chmod(tmp / WEIGHTS_NAME, 0o666 & ~umask())  # as any new file: the temp dir made it private (0600)
    os.replace(tmp / WEIGHTS_NAME, out_dir / WEIGHTS_NAME)
    shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / WEIGHTS_NAME


def load_lora(transformer: nn.Module, path: str | Path) -> None:
    """Attach a diffusers-format LoRA (a directory or the .safetensors file) with the stock pipeline's own loader,
    adapter metadata (alpha) included."""
    path = Path(path)
    file = path / WEIGHTS_NAME if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no LoRA weights (expected {WEIGHTS_NAME})")
    try:
        with safe_open(str(file), framework="pt"):
            pass  # checks the header against the file's length: a truncated file fails here, with the reason
        state, alphas, metadata = FluxFillPipeline.lora_state_dict(
            str(file), return_alphas=True, return_lora_metadata=True
        )
    except (SafetensorError, RuntimeError, ValueError, KeyError, OSError) as err:  # truncated, not safetensors
        raise UserError(
            f"{file}: unreadable LoRA file ({_first_line(err)}); export it again (`pico export RUN --out DIR`)"
        ) from None
    _check_fits(transformer, state, file)
    try:
        FluxFillPipeline.load_lora_into_transformer(
            state, network_alphas=alphas, transformer=transformer, adapter_name=ADAPTER, metadata=metadata
        )
    except (RuntimeError, ValueError, KeyError) as err:
        raise UserError(f"{file}: LoRA does not fit this model ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]


def _check_fits(transformer: nn.Module, state: dict[str, torch.Tensor], file: Path) -> None:
    """Every LoRA tensor must sit on a Linear of this transformer with matching width (before the stock loader,
    which would log a traceback first)."""
    modules = dict(transformer.named_modules())
    for key, tensor in state.items():
        name, _, kind = key.removeprefix("transformer.").rpartition(".lora_")
        layer = modules.get(name)
        width = getattr(layer, "in_features", None) if kind.startswith("A") else getattr(layer, "out_features", None)
        expected = tensor.shape[1] if kind.startswith("A") else tensor.shape[0]
        if width != expected:
            raise UserError(f"{file}: LoRA does not fit this model ({name}: width {expected}, model has {width})")
