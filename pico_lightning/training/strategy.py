"""The Lightning strategy for ``train.strategy``: DDP and friends by name; FSDP configured for a frozen base + LoRA.

FSDP wraps every double and single DiT block as its own unit (the blocks hold ~all of the 12 B parameters), keeps the
original parameters (``use_orig_params``: frozen base and trainable LoRA weights share flat parameters) and gathers a
full state dict on rank zero for checkpoints and the LoRA export.
"""

from __future__ import annotations

from lightning.pytorch.strategies import FSDPStrategy, Strategy

from pico_lightning.config import TrainConfig


def build_strategy(cfg: TrainConfig) -> Strategy | str:
    """``train.strategy`` as the Trainer takes it."""
    if cfg.strategy != "fsdp":
        return cfg.strategy
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

    return FSDPStrategy(
        auto_wrap_policy={FluxTransformerBlock, FluxSingleTransformerBlock},
        sharding_strategy="FULL_SHARD",
        state_dict_type="full",
        use_orig_params=True,
    )
