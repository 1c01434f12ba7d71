"""Prompt -> (prompt_embeds, pooled_prompt_embeds), exactly as FluxFillPipeline encodes them, cached on disk.

The cache key is (encoder identity, prompt, max length, dtype); each entry is one safetensors file. Training never
constructs a text encoder (T5-XXL alone is 9 GB): a dedicated step (`pico embed`, :func:`embed_prompts`) fills the
cache with every prompt the data and the evaluation suites can produce, and training only reads it
(:func:`prompt_table`, held as a :class:`PromptTable` that batches address by row), stopping with one line that
names the command to run when an entry is missing.

    pico embed experiments/flux_fill.yaml model.pretrained_dir=/ckpt/FLUX.1-Fill-dev data.root=/data/visrel
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from diffusers import FluxFillPipeline
from safetensors.torch import load_file, save_file
from torch import nn

from pico_lightning.config import ModelConfig
from pico_lightning.errors import UserError
from pico_lightning.files import atomic_path
from pico_lightning.model.backbone import DTYPES, TextEncoders, build_text_encoders, model_identity

PromptEmbedding = tuple[torch.Tensor, torch.Tensor]  # (L, D) sequence embeddings, (D,) pooled
log = logging.getLogger(__name__)


def encode_prompts(encoders: TextEncoders, prompts: list[str], max_sequence_length: int) -> list[PromptEmbedding]:
    """Encode with FluxFillPipeline's own ``encode_prompt`` (CLIP pooled + T5 sequence), one entry per prompt."""
    pipe = FluxFillPipeline(
        scheduler=None,
        vae=None,
        transformer=None,
        text_encoder=encoders.text_encoder,
        tokenizer=encoders.tokenizer,
        text_encoder_2=encoders.text_encoder_2,
        tokenizer_2=encoders.tokenizer_2,
    )
    warn_truncated(encoders, prompts, max_sequence_length)
    device = encoders.text_encoder_2.device
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt(
            prompts, prompt_2=None, device=device, max_sequence_length=max_sequence_length
        )
    return [(embeds[i].cpu(), pooled[i].cpu()) for i in range(len(prompts))]


def warn_truncated(encoders: TextEncoders, prompts: list[str], max_sequence_length: int) -> None:
    """One warning per encoder for the prompts longer than it reads: the pipeline's tokenizers cut them silently."""
    limits = (("CLIP", encoders.tokenizer, encoders.tokenizer.model_max_length), ("T5", encoders.tokenizer_2, None))
    for name, tokenizer, limit in limits:
        limit = limit or max_sequence_length
        lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=True).input_ids]
        long = [(n, p) for n, p in zip(lengths, prompts) if n > limit]
        if long:
            tokens, prompt = max(long)
            key = " (model.max_sequence_length)" if name == "T5" else ""
            log.warning(
                "%d prompt(s) longer than %s's %d tokens%s: only the first %d tokens are kept "
                "(the longest has %d: %.60r)",
                len(long),
                name,
                limit,
                key,
                limit,
                tokens,
                prompt,
            )


class PromptTable(nn.Module):
    """A run's prompt embeddings stacked into two buffers, (P, Lt, D) and (P, D), addressed by row: they move with
    the module that holds them and are never saved in its checkpoints."""

    def __init__(self, prompts: dict[str, PromptEmbedding]):
        super().__init__()
        self.index = {prompt: row for row, prompt in enumerate(prompts)}
        self.register_buffer("embeds", torch.stack([e for e, _ in prompts.values()]), persistent=False)
        self.register_buffer("pooled", torch.stack([p for _, p in prompts.values()]), persistent=False)

    def row_of(self, prompt: str) -> int:
        """The row of ``prompt``; a prompt not in the table is a UserError naming `pico embed`."""
        if prompt not in self.index:
            raise UserError(f"prompt {prompt!r} has no cached embedding (run `pico embed` for this experiment)")
        return self.index[prompt]

    def ids(self, prompts: list[str]) -> torch.Tensor:
        """(B,) rows of ``prompts``, on the host."""
        return torch.tensor([self.row_of(p) for p in prompts])

    def rows(self, ids: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Lt, D) and (B, D) embeddings of the rows ``ids``: a (B,) tensor, or a slice."""
        return self.embeds[ids], self.pooled[ids]


class TextCache:
    """On-disk prompt-embedding cache for one encoder identity, max length and dtype."""

    def __init__(self, directory: str | Path, identity: str, max_sequence_length: int, dtype: torch.dtype):
        self.directory = Path(directory)
        self.identity = identity
        self.max_sequence_length = max_sequence_length
        self.dtype = dtype

    def path(self, prompt: str) -> Path:
        key = "\x1f".join((self.identity, prompt, str(self.max_sequence_length), str(self.dtype)))
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"

    def get(self, prompts: Iterable[str], load_encoders: Callable[[], TextEncoders]) -> dict[str, PromptEmbedding]:
        """Embeddings of every prompt; misses are encoded in one batch (building the encoders once) and stored."""
        prompts = list(dict.fromkeys(prompts))
        missing = self.missing(prompts)
        found = {p: self._read(p) for p in prompts if p not in missing}
        if missing:
            encoded = encode_prompts(load_encoders(), missing, self.max_sequence_length)
            for prompt, (embeds, pooled) in zip(missing, encoded):
                self._write(prompt, embeds.to(self.dtype), pooled.to(self.dtype))
                found[prompt] = (embeds.to(self.dtype), pooled.to(self.dtype))
        return {p: found[p] for p in prompts}

    def missing(self, prompts: Iterable[str]) -> list[str]:
        """The prompts (once each, in order) that have no entry in the cache yet."""
        return [p for p in dict.fromkeys(prompts) if not self.path(p).is_file()]

    def _read(self, prompt: str) -> PromptEmbedding:
        tensors = load_file(self.path(prompt))
        return tensors["prompt_embeds"], tensors["pooled_prompt_embeds"]

    def _write(self, prompt: str, embeds: torch.Tensor, pooled: torch.Tensor) -> None:
        with atomic_path(self.path(prompt)) as tmp:
            save_file(
                {"prompt_embeds": embeds.contiguous(), "pooled_prompt_embeds": pooled.contiguous()},
                str(tmp),
                metadata={"prompt": prompt, "identity": self.identity},
            )


def model_text_cache(cfg: ModelConfig, identity: str) -> TextCache:
    """The cache for a model: ``model.text_cache_dir`` (or $PICO_CACHE/text, default ~/.cache/pico_lightning/text),
    keyed by the model's identity, max length and dtype."""
    default = Path(os.environ.get("PICO_CACHE", Path.home() / ".cache" / "pico_lightning")) / "text"
    directory = Path(cfg.text_cache_dir) if cfg.text_cache_dir else default
    return TextCache(directory, identity, cfg.sequence_length(), DTYPES[cfg.dtype])


def embed_prompts(cfg: ModelConfig, prompts: list[str]) -> int:
    """The dedicated step: build the text encoders (only if some prompt is missing) and fill the cache; returns
    how many prompts were encoded now."""
    cache = model_text_cache(cfg, model_identity(cfg))
    missing = cache.missing(prompts)
    cache.get(missing, lambda: build_text_encoders(cfg))
    return len(missing)


def prompt_table(cfg: ModelConfig, prompts: list[str]) -> dict[str, PromptEmbedding]:
    """Cached embeddings of ``prompts``; a missing one is a UserError naming the `pico embed` command."""
    cache = model_text_cache(cfg, model_identity(cfg))

    def refuse() -> TextEncoders:  # the cache's "build the encoders" fallback: never in training
        raise UserError(
            f"model.text_cache_dir: prompt embeddings missing in {cache.directory}; training never builds the text "
            "encoders: embed them once with `pico embed EXPERIMENT.yaml [the same key=value overrides]`"
        )

    return cache.get(prompts, refuse)
