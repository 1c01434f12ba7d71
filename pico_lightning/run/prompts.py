"""Prompt embeddings of a run: computed once by a dedicated step (`pico embed`), only read by training.

Training never constructs a text encoder (T5-XXL alone is 9 GB): every prompt the data and the evaluation suites
can produce is embedded beforehand into the on-disk cache (model/text.py), keyed by the base model's identity,
and ``pico train`` reads it, stopping with one line that names the command to run when an entry is missing.

    pico embed experiments/flux_fill.yaml model.pretrained_dir=/ckpt/FLUX.1-Fill-dev data.root=/data/visrel
"""

from __future__ import annotations

from pico_lightning.config import ModelConfig
from pico_lightning.data.schema import CATEGORY_PROMPTS
from pico_lightning.errors import UserError
from pico_lightning.model.backbone import TextEncoders, build_text_encoders, model_identity
from pico_lightning.model.text import PromptEmbedding, model_text_cache


def run_prompts(data_prompts: list[str]) -> list[str]:
    """Every prompt a run embeds: what the data can produce, plus the family labels the eval suites use."""
    return list(dict.fromkeys([*data_prompts, *CATEGORY_PROMPTS.values()]))


def embed_prompts(cfg: ModelConfig, prompts: list[str]) -> int:
    """The dedicated step: build the text encoders (only if some prompt is missing) and fill the cache; returns
    how many prompts were encoded now."""
    cache = model_text_cache(cfg, model_identity(cfg))
    missing = [p for p in dict.fromkeys(prompts) if not cache.path(p).is_file()]
    if missing:
        cache.get(missing, lambda: build_text_encoders(cfg))
    return len(missing)


def prompt_table(
    cfg: ModelConfig, prompts: list[str], experiment: str = "EXPERIMENT.yaml"
) -> dict[str, PromptEmbedding]:
    """Cached embeddings of ``prompts``; a missing one is a UserError naming the `pico embed` command."""

    def refuse() -> TextEncoders:
        directory = model_text_cache(cfg, model_identity(cfg)).directory
        raise UserError(
            f"model.text_cache_dir: prompt embeddings missing in {directory}; training never builds the text encoders: "
            f"embed them once with `pico embed {experiment} [same key=value overrides]`"
        )

    return model_text_cache(cfg, model_identity(cfg)).get(prompts, refuse)
