"""Four-panel grids: pictures in, one grid tensor out, and back.

A layout (pico_lightning/layout.py, importable from here) is ``rows x cols`` square panels of ``panel_size`` pixels,
read row by row; the target panel (B') is the last cell. The classic PICO layout is 2x2. Images are
``(3, H, W)`` float tensors in [-1, 1] (the range the autoencoders take); :func:`to_tensor` accepts PIL (any mode,
converted as ``pictures.to_rgb`` converts it), numpy (HW or HWC; uint8, uint16, bool or float in [0, 1]) and
tensors (CHW or HW). Pure functions: no logger, no file I/O (files are read by ``pictures.read_picture``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pico_lightning.layout import Layout
from pico_lightning.pictures import ImageInputError, to_rgb


def _numpy_to_array(array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C in 1/3/4) numpy of bool, uint8, uint16 or float in [0, 1] -> (H, W, 3) float32."""
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    else:
        array = array.astype(np.float32)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageInputError(f"image array of shape {array.shape}: expected (H, W) or (H, W, 1|3|4)")
    if array.shape[2] == 4:
        array = array[..., :3] * array[..., 3:]
    return np.broadcast_to(array[..., :3], array.shape[:2] + (3,)) if array.shape[2] == 1 else array


def to_tensor(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Any supported picture -> (3, H, W) float32 in [-1, 1].

    uint8 inputs map exactly as diffusers' VaeImageProcessor maps them (x / 255 * 2 - 1, in float32).
    Tensors are taken as already in [-1, 1] when float (CHW or HW), or as uint8 (CHW or HW).
    """
    if isinstance(image, torch.Tensor):
        tensor = image.unsqueeze(0) if image.dim() == 2 else image
        if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
            raise ImageInputError(f"image tensor of shape {tuple(image.shape)}: expected (3, H, W) or (H, W)")
        if tensor.dtype == torch.uint8:
            tensor = tensor.float() / 255.0 * 2.0 - 1.0
        return tensor.float().expand(3, -1, -1).contiguous()
    array = _numpy_to_array(to_rgb(image) if isinstance(image, Image.Image) else np.asarray(image))
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1) * 2.0 - 1.0


def fit_panel(image: torch.Tensor, size: int, mode: str = "resize") -> torch.Tensor:
    """(3, H, W) -> (3, size, size): stretch (``resize``) or keep aspect and pad with black (``letterbox``)."""
    _, height, width = image.shape
    if (height, width) == (size, size):
        return image
    if mode == "resize":
        target = (size, size)
    elif mode == "letterbox":
        scale = size / max(height, width)
        target = (max(1, round(height * scale)), max(1, round(width * scale)))
    else:
        raise ValueError(f"resize mode {mode!r}: expected 'resize' or 'letterbox'")
    resized = F.interpolate(image[None], size=target, mode="bicubic", align_corners=False, antialias=True)[0]
    resized = resized.clamp(-1.0, 1.0)
    if target == (size, size):
        return resized
    canvas = torch.full((3, size, size), -1.0)
    top, left = (size - target[0]) // 2, (size - target[1]) // 2
    canvas[:, top : top + target[0], left : left + target[1]] = resized
    return canvas


def unfit_panel(panel: torch.Tensor, height: int, width: int, mode: str = "resize") -> torch.Tensor:
    """The inverse of :func:`fit_panel`: a (3, S, S) panel back to (3, height, width), the letterbox's padding cut
    off first. Exact when the picture was already S x S."""
    size = panel.shape[-1]
    if (height, width) == (size, size):
        return panel
    if mode == "letterbox":
        scale = size / max(height, width)
        inner = (max(1, round(height * scale)), max(1, round(width * scale)))
        top, left = (size - inner[0]) // 2, (size - inner[1]) // 2
        panel = panel[:, top : top + inner[0], left : left + inner[1]]
    elif mode != "resize":
        raise ValueError(f"resize mode {mode!r}: expected 'resize' or 'letterbox'")
    resized = F.interpolate(panel[None], size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return resized[0].clamp(-1.0, 1.0)


def compose_grid(panels: Sequence, layout: Layout, mode: str = "resize") -> torch.Tensor:
    """Pictures in reading order (A, A', B, B' for 2x2) -> grid (3, rows*S, cols*S) in [-1, 1].

    The target (last) panel may be None: it is left black, as the masked image would show it.
    """
    if len(panels) != layout.num_panels:
        raise ValueError(
            f"{len(panels)} panels given: the {layout.rows}x{layout.cols} layout needs {layout.num_panels}"
        )
    grid = torch.full((3, layout.height, layout.width), -1.0)
    for index, panel in enumerate(panels):
        if panel is None:
            continue
        rows, cols = layout.cell(index)
        grid[:, rows, cols] = fit_panel(to_tensor(panel), layout.panel_size, mode)
    return grid


def split_grid(grid: torch.Tensor, layout: Layout) -> list[torch.Tensor]:
    """(..., C, rows*S, cols*S) -> the panels in reading order, each (..., C, S, S)."""
    return [grid[..., rows, cols] for rows, cols in map(layout.cell, range(layout.num_panels))]


def target_mask(layout: Layout) -> torch.Tensor:
    """(1, rows*S, cols*S) float mask: 1 on the target panel (to be generated), 0 on the context."""
    mask = torch.zeros(1, layout.height, layout.width)
    rows, cols = layout.cell(layout.num_panels - 1)
    mask[:, rows, cols] = 1.0
    return mask


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8, rounding exactly as diffusers' postprocess does."""
    array = (image.detach().float().cpu() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()
    return (array * 255).round().astype(np.uint8)


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(image))
