"""Prompt embeddings of a run: computed once by a dedicated step (`pico embed`), only read by training.

Training never constructs a text encoder (T5-XXL alone is 9 GB): every prompt the data and the evaluation suites
can produce is embedded beforehand into the on-disk cache (model/text.py), keyed by the base model's identity,
and ``pico train`` reads it, stopping with one line that names the command to run when an entry is missing.

    pico embed experiments/flux_fill.yaml model.pretrained_dir=/ckpt/FLUX.1-Fill-dev data.root=/data/visrel
"""

from __future__ import annotations

from pico_lightning.config import DataConfig, ModelConfig
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
    missing = cache.missing(prompts)
    cache.get(missing, lambda: build_text_encoders(cfg))
    return len(missing)


def embed_run_prompts(model: ModelConfig, data: DataConfig) -> tuple[int, int]:
    """`pico embed`'s step for an experiment: every prompt its data and suites can produce, embedded if missing;
    returns (prompts, newly encoded)."""
    from pico_lightning.data.catalogue import DatasetCatalogue

    prompts = run_prompts(DatasetCatalogue(data).prompts())
    return len(prompts), embed_prompts(model, prompts)


def prompt_table(cfg: ModelConfig, prompts: list[str]) -> dict[str, PromptEmbedding]:
    """Cached embeddings of ``prompts``; a missing one is a UserError naming the `pico embed` command."""
    cache = model_text_cache(cfg, model_identity(cfg))

    def refuse() -> TextEncoders:  # the cache's "build the encoders" fallback: never in training
        raise UserError(
            f"model.text_cache_dir: prompt embeddings missing in {cache.directory}; training never builds the text "
            "encoders: embed them once with `pico embed EXPERIMENT.yaml [the same key=value overrides]`"
        )

    return cache.get(prompts, refuse)
