"""Build the model parts: tiny and in-process from config, or from a local diffusers FLUX.1-Fill directory.

Nothing is ever downloaded: a pretrained directory is read with ``local_files_only=True`` and must have the
layout ``FluxFillPipeline.save_pretrained`` writes. Text encoders are built separately (:func:`build_text_encoders`)
because training reads prompt embeddings from the on-disk cache and never needs them.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from torch import nn
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from pico_lightning.config import ModelConfig
from pico_lightning.config.presets import PRESETS, Preset
from pico_lightning.errors import UserError
from pico_lightning.model.autoencoder import Autoencoder, KLAutoencoder, PixelShuffleAutoencoder

SUBFOLDERS = ("transformer", "vae", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CLIP_MAX_LENGTH = 77
MANIFEST = "SHA256SUMS"
LAYOUT_FILES = ("model_index.json", "transformer/config.json")  # what FluxFillPipeline.save_pretrained writes


class ModelDirError(UserError):
    """An unusable pretrained directory; the message lists what is missing."""


@dataclass
class FluxParts:
    """The frozen base: DiT, autoencoder and scheduler, plus an identity string for caches and checkpoints."""

    transformer: FluxTransformer2DModel
    autoencoder: Autoencoder
    scheduler: FlowMatchEulerDiscreteScheduler
    identity: str


@dataclass
class TextEncoders:
    """CLIP (pooled) and T5 (sequence) encoders with their tokenizers, as FluxFillPipeline takes them."""

    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    text_encoder_2: T5EncoderModel
    tokenizer_2: T5TokenizerFast


def dit_blocks(transformer: FluxTransformer2DModel) -> list[nn.Module]:
    """FLUX's repeated blocks in the order they run: double-stream, then single-stream."""
    return [*transformer.transformer_blocks, *transformer.single_transformer_blocks]


def model_identity(cfg: ModelConfig) -> str:
    """A stable id of the base model: the resolved directory, or a hash of the tiny architecture."""
    if cfg.pretrained_dir:
        return f"dir:{Path(cfg.pretrained_dir).resolve()}"
    tiny = {k: v for k, v in asdict(cfg).items() if k not in ("guidance", "text_cache_dir", "pretrained_dir")}
    return "tiny:" + hashlib.sha256(json.dumps(tiny, sort_keys=True).encode()).hexdigest()[:16]


def check_model_dir(path: str | Path) -> None:
    """Raise :class:`ModelDirError` listing every missing part of a diffusers FLUX.1-Fill directory.

    A directory that ships a ``SHA256SUMS`` manifest must also match it file by file.
    """
    root = Path(path)
    if not root.is_dir():
        raise ModelDirError(
            f"model.pretrained_dir: {root}: model directory not found (expected a FluxFillPipeline.save_pretrained "
            "layout)"
        )
    missing = [name for name in SUBFOLDERS if not (root / name).is_dir() or not any((root / name).iterdir())]
    missing += [name for name in LAYOUT_FILES if not (root / name).is_file()]
    if missing:
        raise ModelDirError(f"{root}: incomplete FLUX.1-Fill directory, missing: {', '.join(missing)}")
    if (root / MANIFEST).is_file():
        _check_manifest(root)


def _check_manifest(root: Path) -> None:
    """Every file ``SHA256SUMS`` lists (``<hex>  <relative path>`` lines, as sha256sum writes) exists and matches."""
    for line in (root / MANIFEST).read_text().splitlines():
        digest, _, name = line.partition("  ")
        file = root / name
        if not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            problem = "missing" if not file.is_file() else "changed (SHA-256 mismatch)"
            raise ModelDirError(f"{file}: {problem} against {root / MANIFEST}")


def fill_transformer(preset: Preset, latent_channels: int, scale_factor: int) -> FluxTransformer2DModel:
    """A Fill DiT of ``preset``'s size: in_channels = 4C (noisy) + 4C (masked image) + 4*s^2 (mask)."""
    arch = {**preset.transformer, "axes_dims_rope": tuple(preset.transformer["axes_dims_rope"])}
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=8 * latent_channels + 4 * scale_factor**2,
        out_channels=4 * latent_channels,
        guidance_embeds=True,
        **arch,
    )


def kl_vae(block_out_channels: tuple[int, ...], layers_per_block: int) -> AutoencoderKL:
    """A random-init AutoencoderKL with FLUX's scale 8, 16 latent channels, scaling and shift."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        latent_channels=16,
        norm_num_groups=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def preset_autoencoder(preset: Preset) -> Autoencoder:
    """The autoencoder a preset names: lossless PixelShuffle, a small KL (32 channels), or FLUX's VAE geometry."""
    if preset.autoencoder == "small_kl":
        return KLAutoencoder(kl_vae((32, 32, 32, 32), 1))
    if preset.autoencoder == "flux_kl":
        return KLAutoencoder(kl_vae((128, 256, 512, 512), 2))
    return PixelShuffleAutoencoder(preset.pixel_shuffle_scale)


def build_parts(cfg: ModelConfig, device: torch.device | str | None = None) -> FluxParts:
    """The frozen base for ``cfg`` on ``device``: loaded from ``pretrained_dir``, or the in-process ``preset`` (seeded,
    identical in every process), initialised directly on the device in its storage dtype (no host copy, no fp32
    detour: a flux-fill-dev base is 22 GiB in bf16, 45 GiB in fp32)."""
    device = torch.device(device or "cpu")
    if cfg.pretrained_dir:
        parts = _load_parts(cfg.pretrained_dir, DTYPES[cfg.dtype], device)
    else:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
            torch.manual_seed(cfg.init_seed)
            preset = PRESETS[cfg.preset]
            with default_dtype(DTYPES[cfg.dtype]):
                autoencoder = preset_autoencoder(preset)
                transformer = fill_transformer(preset, autoencoder.latent_channels, autoencoder.scale_factor)
        parts = FluxParts(
            transformer,
            autoencoder,
            FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
            "",
        )
    parts.identity = model_identity(cfg)
    freeze(parts.transformer)
    freeze(parts.autoencoder)
    return parts


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create floating-point parameters in ``dtype`` for the duration of the block."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _load_parts(path: str, dtype: torch.dtype, device: torch.device) -> FluxParts:
    """The weights are read straight onto ``device`` (a device map of one device: no full host copy per rank)."""
    check_model_dir(path)
    kwargs = {"local_files_only": True, "torch_dtype": dtype, "device_map": {"": device}}
    try:
        transformer = FluxTransformer2DModel.from_pretrained(path, subfolder="transformer", **kwargs)
        autoencoder = _load_autoencoder(path, kwargs).to(device)  # a no-op for a device-mapped AutoencoderKL
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ModelDirError(f"{path}: cannot load FLUX.1-Fill weights ({str(err).splitlines()[0]})") from None
    return FluxParts(transformer, autoencoder, scheduler, "")


def _load_autoencoder(path: str, kwargs: dict) -> Autoencoder:
    """vae/ by its config's ``_class_name``: FLUX's AutoencoderKL, or the weight-free PixelShuffleAutoencoder."""
    name = json.loads((Path(path) / "vae" / "config.json").read_text()).get("_class_name")
    if name == PixelShuffleAutoencoder.__name__:
        return PixelShuffleAutoencoder.from_pretrained(path, subfolder="vae")
    return KLAutoencoder(AutoencoderKL.from_pretrained(path, subfolder="vae", **kwargs))


def build_text_encoders(cfg: ModelConfig) -> TextEncoders:
    """CLIP + T5 from ``pretrained_dir``, or tiny file-less ones (seeded) matching the tiny DiT's widths."""
    if cfg.pretrained_dir:
        check_model_dir(cfg.pretrained_dir)
        kwargs = {"local_files_only": True}
        dtype = DTYPES[cfg.dtype]
        return TextEncoders(
            CLIPTextModel.from_pretrained(cfg.pretrained_dir, subfolder="text_encoder", dtype=dtype, **kwargs),
            CLIPTokenizer.from_pretrained(cfg.pretrained_dir, subfolder="tokenizer", **kwargs),
            T5EncoderModel.from_pretrained(cfg.pretrained_dir, subfolder="text_encoder_2", dtype=dtype, **kwargs),
            T5TokenizerFast.from_pretrained(cfg.pretrained_dir, subfolder="tokenizer_2", **kwargs),
        )
    return _tiny_text_encoders(cfg)


def _tiny_text_encoders(cfg: ModelConfig) -> TextEncoders:
    arch = PRESETS[cfg.preset].transformer  # the encoders' widths are the DiT's text widths
    chars = string.ascii_letters + string.digits + ".,!?'-"
    clip_vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in chars.lower() + string.digits:
        clip_vocab.setdefault(char, len(clip_vocab))
        clip_vocab.setdefault(char + "</w>", len(clip_vocab))
    t5_vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    t5_vocab += [(char, -2.0) for char in chars] + [("\u2581" + char, -1.5) for char in chars]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed + 1)
        clip = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(clip_vocab),
                hidden_size=arch["pooled_projection_dim"],
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=CLIP_MAX_LENGTH,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        )
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=len(t5_vocab),
                d_model=arch["joint_attention_dim"],
                d_kv=8,
                d_ff=64,
                num_layers=1,
                num_heads=2,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        )
    return TextEncoders(
        freeze(clip),
        CLIPTokenizer(vocab=clip_vocab, merges=[], model_max_length=CLIP_MAX_LENGTH),
        freeze(t5),
        T5TokenizerFast(vocab=t5_vocab, extra_ids=0),
    )


def save_pipeline(parts: FluxParts, text: TextEncoders, path: str | Path) -> Path:
    """Write the parts as a FluxFillPipeline directory (``save_pretrained``): what ``model.pretrained_dir`` loads."""
    from diffusers import FluxFillPipeline

    FluxFillPipeline(
        scheduler=parts.scheduler,
        vae=parts.autoencoder.vae if isinstance(parts.autoencoder, KLAutoencoder) else parts.autoencoder,
        transformer=parts.transformer,
        text_encoder=text.text_encoder,
        tokenizer=text.tokenizer,
        text_encoder_2=text.text_encoder_2,
        tokenizer_2=text.tokenizer_2,
    ).save_pretrained(path)
    return Path(path)


def freeze(module: nn.Module) -> nn.Module:
    """No gradients and eval mode for a frozen base part."""
    module.requires_grad_(False)
    return module.eval()
