"""The one interface inference needs: "a model that can fill an episode".

Both ``InferenceModel`` (a loaded base + LoRA, inference/loading.py) and ``PicoModule`` (the training module,
evaluated in Lightning's validation loop) satisfy it, so the sampler, the seed scorer and the evaluator never look
inside either.
"""

from __future__ import annotations

from typing import Protocol

import torch

from pico_lightning.model.backbone import FluxParts
from pico_lightning.model.conditioning import TextInputs


class FillModel(Protocol):
    """The frozen parts (with any LoRA attached), their device, and prompt -> text embeddings."""

    @property
    def parts(self) -> FluxParts: ...

    @property
    def device(self) -> torch.device: ...

    def text(self, prompt: str) -> TextInputs:
        """(1, Lt, D) and (1, D) embeddings of ``prompt`` on the model's device, in the transformer's dtype."""
        ...
