"""Model and LoRA sections of the experiment schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pico_lightning.config.checks import check
from pico_lightning.config.presets import PIPELINE_MAX_SEQUENCE_LENGTH, PRESETS


@dataclass
class ModelConfig:
    pretrained_dir: str = ""
    """Local diffusers-format FLUX.1-Fill directory; empty builds the in-process ``preset`` (random init)."""
    preset: Literal["tiny", "tiny-kl", "small", "flux-fill-dev"] = "tiny"
    """The in-process architecture when pretrained_dir is empty (config/presets.py): tiny (tests), tiny-kl, small
    (2 + 2 blocks) or flux-fill-dev (FLUX.1-Fill-dev's geometry, random init)."""
    init_seed: int = 0
    """In-process model only: seed of the random initialisation, so every process builds the same base."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Storage dtype of the frozen base; LoRA parameters always stay float32."""
    base_quantization: Literal["none", "int8", "float8"] = "none"
    """Store the frozen base's block Linear weights in 8 bits: halves the base's memory for 24 GB cards. ``float8``
    also multiplies in float8, activations quantized per token (GPUs of compute capability 8.9+: Ada, Hopper,
    Blackwell); ``int8`` is torchao's weight-only int8 (`pip install .[quant]`), computing in ``dtype``. LoRA stays
    float32 over the quantized layers."""
    max_sequence_length: int = 0
    """T5 tokens per prompt; 0 = the model's default: FluxFillPipeline's 512 for a pretrained directory, the
    preset's for an in-process model (see sequence_length())."""
    guidance: float = 30.0
    """Guidance-embedding value fed to the DiT (FLUX.1-Fill-dev's default), in training and at inference."""
    text_cache_dir: str = ""
    """Prompt-embedding cache directory; empty = <run dir>/text_cache or ~/.cache/pico_lightning/text."""

    def __post_init__(self) -> None:
        # pretrained_dir is checked where it is read (model/backbone.check_model_dir), not here: --print-config and
        # `pico train --dry-run` on a login node resolve configs whose weights live elsewhere
        check(self.max_sequence_length >= 0, "model.max_sequence_length", "an integer >= 0", self.max_sequence_length)

    def sequence_length(self) -> int:
        """T5 tokens per prompt: max_sequence_length, else the pipeline's default or the preset's."""
        default = PIPELINE_MAX_SEQUENCE_LENGTH if self.pretrained_dir else PRESETS[self.preset].max_sequence_length
        return self.max_sequence_length or default


@dataclass
class LoraConfig:
    rank: int = 16
    """LoRA rank r."""
    alpha: float = 16.0
    """LoRA alpha; the update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the LoRA branch."""
    target_modules: list[str] = field(
        default_factory=lambda: [
            "attn.to_q",
            "attn.to_k",
            "attn.to_v",
            "attn.to_out.0",
            "attn.add_q_proj",
            "attn.add_k_proj",
            "attn.add_v_proj",
            "attn.to_add_out",
            "ff.net.0.proj",
            "ff.net.2",
            "ff_context.net.0.proj",
            "ff_context.net.2",
            "proj_mlp",
            "proj_out",
        ]
    )
    """Module-name suffixes inside the double and single blocks."""
    extra_modules: list[str] = field(default_factory=list)
    """Full names of Linear layers outside the blocks to adapt as well (e.g. x_embedder, proj_out; ICEdit adapts
    x_embedder). Empty for FLUX.1-Fill-dev; the demo's random-init tiny base needs them to learn in minutes."""

    def __post_init__(self) -> None:
        check(self.rank >= 1, "lora.rank", "an integer >= 1", self.rank)
        check(self.alpha > 0, "lora.alpha", "a number > 0", self.alpha)
        check(0.0 <= self.dropout < 1.0, "lora.dropout", "a number in [0, 1)", self.dropout)
        check(len(self.target_modules) > 0, "lora.target_modules", "a non-empty list", self.target_modules)
