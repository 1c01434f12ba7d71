"""Depth maps beside their photographs -> the depth estimation task, drawn as pico_lightning's depth operator does.

    python -m data_prep.depth SRC --out RAW [--suffix _depth] [--invalid 0]

Pairs every photograph ``<name>.<ext>`` under SRC (any depth) with the depth map beside it, ``<name>_depth.<ext>``
(--suffix): one channel, 16-bit PNG (NYU, ScanNet, KITTI: millimetres or 1/256 m), float TIFF (metres) or 8-bit.
The unit does not matter: each map is scaled between its own 1st and 99th percentiles. Pixels equal to --invalid
(default 0: no reading) are black. Writes under RAW/estimation/, with the variants of
pico_lightning/prep/ops_geometry.py's ``depth``:

    depth_grey   the photograph -> near = white, far = black
    depth_jet    the photograph -> near = red, far = blue

A photograph without a depth map, a depth map of another size or with several channels, and unreadable files are
skipped and listed.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image, UnidentifiedImageError

from data_prep.layout import find_pictures, pair_ids, report, run_recipe, write_pair
from pico_lightning.errors import UserError
from pico_lightning.pictures import ImageInputError, read_picture
from pico_lightning.prep.ops_geometry import depth as depth_operator

CATEGORY = "estimation"
VARIANTS = ("grey", "jet")
ONE_CHANNEL = ("L", "I", "F")  # and every "I;16..." mode


def make_depth_tasks(src: Path, raw: Path, suffix: str = "_depth", invalid: float = 0.0) -> tuple[Counter, dict]:
    """Write a depth pair per photograph with a depth map under ``src`` into ``raw``; returns (pairs per task,
    skipped)."""
    if not src.is_dir():
        raise UserError(f"{src}: not a directory of photographs and depth maps")
    pictures = find_pictures(src)
    depth_maps = {
        path.with_name(path.stem.removesuffix(suffix)): path for path in pictures if path.stem.endswith(suffix)
    }
    photos = [path for path in pictures if not path.stem.endswith(suffix)]
    written, skipped = Counter(), {"no depth map": [], "unreadable": [], "not one channel": [], "size differs": []}
    for path, pair_id in pair_ids(photos, src).items():
        name = path.relative_to(src).as_posix()
        depth_path = depth_maps.get(path.with_suffix(""))
        if depth_path is None:
            skipped["no depth map"].append(name)
            continue
        try:
            photo, depth = read_picture(path), read_depth(depth_path)
        except ImageInputError:
            skipped["unreadable"].append(name)
            continue
        if depth is None or depth.shape != photo.shape[:2]:
            skipped["not one channel" if depth is None else "size differs"].append(
                depth_path.relative_to(src).as_posix()
            )
            continue
        valid = depth != invalid
        scene = SimpleNamespace(image=photo, depth=scaled(depth, valid))
        for variant in VARIANTS:
            source, target = depth_operator(np.random.default_rng(0), variant, scene)
            write_pair(raw, CATEGORY, f"depth_{variant}", pair_id, source, np.where(valid[..., None], target, 0))
            written[f"depth_{variant}"] += 1
    return written, skipped


def read_depth(path: Path) -> np.ndarray | None:
    """A depth map's raw values as (H, W) float64; None when it has several channels."""
    try:
        with Image.open(path) as image:
            if image.mode not in ONE_CHANNEL and not image.mode.startswith("I;16"):
                return None
            return np.asarray(image, np.float64)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ImageInputError(f"{path}: cannot read a depth map ({err})") from None


def scaled(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Depth onto [0, 1] (near = 0) between the valid pixels' 1st and 99th percentiles, clipped."""
    if not valid.any():
        return np.zeros_like(depth)
    low, high = np.percentile(depth[valid], (1, 99))
    return np.clip((depth - low) / max(high - low, 1e-12), 0, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.depth", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="a folder of photographs with their depth maps beside them")
    parser.add_argument("--out", type=Path, required=True, help="RAW: the task folders' root (pico prep folders RAW)")
    parser.add_argument("--suffix", default="_depth", help="<name><suffix>.<ext> is <name>.<ext>'s depth map")
    parser.add_argument("--invalid", type=float, default=0.0, help="the depth value that means no reading")
    args = parser.parse_args(argv)

    def body() -> None:
        report("data_prep.depth", args.out, *make_depth_tasks(args.src, args.out, args.suffix, args.invalid))

    return run_recipe("data_prep.depth", body)


if __name__ == "__main__":
    raise SystemExit(main())
