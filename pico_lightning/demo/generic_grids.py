"""Generic inpainting grids for pretraining the demo's tiny Fill base: no VisRel task is ever drawn here.

A grid is ``A | A'`` over ``B | B'``: A and B are pictures (photo crops, shape scenes, sphere scenes), and one
*generic* relation ``f``, drawn per grid with its parameters, gives ``A' = f(A)`` and ``B' = f(B)``. The relations
are deliberately none of VisRel-lite's 27 operators (no flip, rotation, blur, noise, brightness, segmentation...):
copy, translation, zoom into a crop, a colour-channel permutation, a colour negative, and a translation composed
with a channel permutation. What is masked: the B' panel (completing the analogy), any one panel, or a few
random rectangles (plain inpainting). The *exemplar* grids (copy or negative with only B' masked: two answers for
the same B that only A -> A' tells apart, so the loss falls only once the model reads its exemplar; bench/RESULTS.md:
a base trained on the whole mix never learns to) make up a chosen share of a batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pico_lightning.prep import photos
from pico_lightning.prep.scenes import geometry_scene, shape_scene

Relation = Callable[[np.ndarray], np.ndarray]
RELATIONS = ("copy", "shift", "zoom", "channels", "negative", "shift_channels")
EXEMPLAR_RELATIONS = ("copy", "negative")  # the exemplar phase: opposite answers, told apart only by A -> A'
PERMUTATIONS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
TOKEN = 4  # pixels per DiT token side (PixelShuffle s=2, then 2x2 packing): rectangles align to it


def picture(rng: np.random.Generator, size: int) -> np.ndarray:
    """One source picture, (size, size, 3) uint8: a photo crop half the time, else a shape or sphere scene."""
    draw = rng.random()
    if draw < 0.5:
        return photos.photo(rng, size)
    if draw < 0.75:
        return shape_scene(rng, size).image
    return geometry_scene(rng, size).image


def relation(rng: np.random.Generator, size: int, names: tuple[str, ...] = RELATIONS) -> tuple[str, Relation]:
    """A random relation of ``names`` and its name; its parameters are drawn here, once, and shared by A and B."""
    name = str(rng.choice(names))
    shift = tuple(int(v) for v in rng.integers(-size // 4, size // 4 + 1, 2))
    perm = PERMUTATIONS[int(rng.integers(len(PERMUTATIONS)))]
    side = int(size * rng.uniform(0.5, 0.8))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
    relations: dict[str, Relation] = {
        "copy": lambda x: x,
        "shift": lambda x: np.roll(x, shift, axis=(0, 1)),
        "zoom": lambda x: photos.resize(x[top : top + side, left : left + side], size),
        "channels": lambda x: x[..., perm],
        "negative": lambda x: 255 - x,
        "shift_channels": lambda x: np.roll(x, shift, axis=(0, 1))[..., perm],
    }
    return name, relations[name]


def grid_mask(rng: np.random.Generator, size: int, target_only: bool = False) -> np.ndarray:
    """(2*size, 2*size) float32 mask, 1 = to fill: B' (60%), one random panel (20%) or 1-3 rectangles (20%);
    always B' (drawing nothing) with ``target_only``."""
    mask = np.zeros((2 * size, 2 * size), np.float32)
    draw = 0.0 if target_only else rng.random()  # 0.0 is the B' branch
    if draw < 0.8:
        panel = 3 if draw < 0.6 else int(rng.integers(4))
        row, col = divmod(panel, 2)
        mask[row * size : (row + 1) * size, col * size : (col + 1) * size] = 1
        return mask
    cells = 2 * size // TOKEN
    for _ in range(int(rng.integers(1, 4))):
        height, width = (int(v) for v in rng.integers(2, cells // 2 + 1, 2))
        top, left = int(rng.integers(0, cells - height + 1)), int(rng.integers(0, cells - width + 1))
        mask[top * TOKEN : (top + height) * TOKEN, left * TOKEN : (left + width) * TOKEN] = 1
    return mask


def generic_grid(rng: np.random.Generator, size: int, exemplar: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """One grid: (2*size, 2*size, 3) uint8 pictures, its (2*size, 2*size) mask and the relation's name; an
    ``exemplar`` grid is copy or negative with B' masked."""
    name, fn = relation(rng, size, EXEMPLAR_RELATIONS if exemplar else RELATIONS)
    a, b = picture(rng, size), picture(rng, size)
    top = np.concatenate([a, fn(a)], axis=1)
    bottom = np.concatenate([b, fn(b)], axis=1)
    return np.ascontiguousarray(np.concatenate([top, bottom], axis=0)), grid_mask(rng, size, exemplar), name


def generic_batch(
    rng: np.random.Generator, batch: int, size: int, exemplar_share: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` grids as (B, 3, 2S, 2S) float32 in [-1, 1] and masks (B, 1, 2S, 2S); each is an exemplar grid with
    probability ``exemplar_share`` (0 and 1 draw nothing for it, so such batches consume the same random stream)."""
    grids, masks = zip(*[generic_grid(rng, size, _is_exemplar(rng, exemplar_share))[:2] for _ in range(batch)])
    images = np.stack(grids).astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    return images, np.stack(masks)[:, None]


def _is_exemplar(rng: np.random.Generator, share: float) -> bool:
    """Whether the next grid is an exemplar grid, drawn only when ``share`` is strictly between 0 and 1."""
    return share >= 1 or (share > 0 and bool(rng.random() < share))
