"""TrainBatch: what one training batch holds, from the stream's collation (data/stream.py) to ``training_step``.

A TypedDict, so it stays a plain dict at run time: Lightning moves it to the device key by key, and DataLoader
workers pickle it as they always did.
"""

from __future__ import annotations

from typing import TypedDict

import torch


class _Episodes(TypedDict):
    """B episodes of one rank: tensors stacked, strings as lists of B."""

    grid: torch.Tensor  # (B, 3, H, W) float32 in [-1, 1]: the composed grids, target panel included
    mask: torch.Tensor  # (B, 1, H, W) float32: 1 on the target panel (B'), the region the model fills
    prompt: list[str]  # the episode's text (after prompt dropout)
    task: list[str]
    category: list[str]  # the task's family (data/schema.py CATEGORIES)


class TrainBatch(_Episodes, total=False):
    """The episodes, plus what the stream and the module add on the way (absent from other loaders' batches)."""

    skipped: torch.Tensor  # () long: corrupt samples and shards this worker skipped this epoch
    prompt_id: torch.Tensor  # (B,) long rows of the prompt table, added by PicoModule
    category_id: torch.Tensor  # (B,) long indices into CATEGORIES, added by PicoModule
