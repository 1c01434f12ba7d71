"""Everything inference needs, built once: the frozen base (+ LoRA), the device and the prompt-embedding cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pico_lightning.config import ModelConfig
from pico_lightning.model.backbone import FluxParts, build_parts, build_text_encoders
from pico_lightning.model.conditioning import TextInputs
from pico_lightning.model.text import TextCache, model_text_cache


@dataclass
class InferenceModel:
    """The base model ready to sample, on its device, with a text cache for its identity."""

    parts: FluxParts
    cfg: ModelConfig
    text_cache: TextCache
    device: torch.device

    def text(self, prompt: str) -> TextInputs:
        """(1, Lt, D) and (1, D) embeddings of ``prompt`` on this model's device and dtype."""
        embeds, pooled = self.text_cache.get([prompt], lambda: build_text_encoders(self.cfg))[prompt]
        dtype = self.parts.transformer.dtype
        return TextInputs(embeds[None].to(self.device, dtype), pooled[None].to(self.device, dtype))


def load_inference_model(
    cfg: ModelConfig, lora: str | Path | None = None, device: str | torch.device | None = None, compile: bool = False
) -> InferenceModel:
    """Build (or load) the base, attach a diffusers-format LoRA if given, and move it to ``device``; ``compile``
    compiles the repeated blocks (``eval.compile``), lazily at the first sample.

    The LoRA is fused into the base weights (diffusers' ``fuse_lora``): sampling never trains, so each adapted layer
    runs one matmul instead of three."""
    from pico_lightning.model.compilation import compile_blocks
    from pico_lightning.model.lora import load_lora

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    parts = build_parts(cfg)
    if lora:
        load_lora(parts.transformer, lora)
        parts.transformer.fuse_lora()
    parts.transformer.to(device)
    parts.autoencoder.to(device)
    if compile:
        compile_blocks(parts.transformer)
    return InferenceModel(parts, cfg, model_text_cache(cfg, parts.identity), device)
