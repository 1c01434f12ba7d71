"""Gallery pictures: one row per episode, A | A' | B | B' predicted | B' ground truth (pure, uint8 out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pico_lightning.files import atomic_path
from pico_lightning.panels import Layout, split_grid, to_uint8

GAP = 2  # pixels of white between panels and rows
MIN_PANEL = 96  # smaller panels (the demo's 32 px) are enlarged by a whole factor, each pixel a square block


def episode_row(grid: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor, layout: Layout) -> np.ndarray:
    """(Z*S, 5*Z*S + 4*GAP, 3) uint8: the context panels, the prediction, then the ground truth, each enlarged
    Z = max(1, MIN_PANEL // S) times (nearest neighbour)."""
    zoom = max(1, MIN_PANEL // layout.panel_size)
    tiles = [to_uint8(p) for p in split_grid(grid, layout)[:-1]] + [to_uint8(prediction), to_uint8(target)]
    tiles = [tile.repeat(zoom, axis=0).repeat(zoom, axis=1) for tile in tiles]
    gap = np.full((zoom * layout.panel_size, GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)


def gallery_image(rows: list[np.ndarray]) -> np.ndarray:
    """Stack episode rows with white gaps: (N*S + (N-1)*GAP, W, 3) uint8."""
    if not rows:
        return np.full((1, 1, 3), 255, dtype=np.uint8)
    gap = np.full((GAP, rows[0].shape[1], 3), 255, dtype=np.uint8)
    return np.concatenate([part for row in rows for part in (row, gap)][:-1], axis=0)


def save_png(image: np.ndarray, path: Path) -> None:
    """Write a uint8 picture atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def gallery_rows(outputs: list, layout: Layout, per_suite: int) -> tuple[list, list[np.ndarray]]:
    """The first ``per_suite`` evaluated episodes of each suite (fixed across steps) and their picture rows."""
    chosen, seen = [], {}
    for output in outputs:
        seen[output.item.suite] = seen.get(output.item.suite, 0) + 1
        if seen[output.item.suite] <= per_suite:
            chosen.append(output)
    return chosen, [episode_row(o.item.grid, o.prediction, o.item.target, layout) for o in chosen]
