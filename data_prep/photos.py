"""Photographs -> the VisRel task types an operator makes: one pair per photograph, task and variant.

    python -m data_prep.photos PHOTOS --out RAW [--tasks denoise,edges,...] [--size 512] [--seed 0]

Every photograph under PHOTOS (any depth, any picture format) is read as `pico prep folders` reads it,
centre-cropped to a square of --size pixels (the operators work on squares) and given to each operator of
pico_lightning/prep (registry.py, ops_*.py) that transforms a photograph: restoration (denoise, deblur, inpaint,
contrast_equalise, low_light, jpeg_artifacts, super_resolution), geometry and edges (edges, flip, rotate) and
manipulation (colorize, posterize, sketch, sepia, cartoon, sticker_insert, watermark_remove). Each variant is a task
of its own, ``<task>_<variant>`` (``denoise_salt_pepper``), so an episode's exemplar and query share one
transformation. The operators that draw on synthetic scenes (depth, normals, segmentation, ...) are not here: a
lab's outputs for those come from annotations (data_prep.coco, data_prep.depth). Colourisation skips grey
photographs. The operators' randomness is seeded by --seed, the photograph's id and the task, so a photograph
gets the same pairs whatever else is in the folder.
"""

from __future__ import annotations

import argparse
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from data_prep.layout import find_pictures, pair_ids, report, run_recipe, write_pair
from pico_lightning.errors import UserError
from pico_lightning.pictures import ImageInputError, read_picture
from pico_lightning.prep.photos import colour_photo, photo, resize
from pico_lightning.prep.registry import TASKS, TaskSpec

PHOTO_TASKS = {spec.name: spec for spec in TASKS if spec.source in (photo, colour_photo)}


def make_photo_tasks(
    src: Path, raw: Path, tasks: list[str] | None = None, size: int = 512, seed: int = 0
) -> tuple[Counter, dict[str, list[str]]]:
    """Write the pairs of ``tasks`` (default: every photo task) for every photograph under ``src`` into ``raw``;
    returns (pairs per task folder, skipped sources by reason)."""
    specs = select_tasks(tasks)
    if not src.is_dir():
        raise UserError(f"{src}: not a directory of photographs")
    paths = find_pictures(src)
    if not paths:
        raise UserError(f"{src}: no photographs (png, jpg, jpeg, bmp, tif, tiff or webp) in it")
    written, skipped = Counter(), {"unreadable": [], "grey, so no colourisation": []}
    for path, pair_id in pair_ids(paths, src).items():
        name = path.relative_to(src).as_posix()
        try:
            image = centre_square(read_picture(path), size)
        except ImageInputError:
            skipped["unreadable"].append(name)
            continue
        for spec in specs:
            if spec.source is colour_photo and is_grey(image):
                skipped["grey, so no colourisation"].append(name)
                continue
            for variant in spec.variants:
                task = f"{spec.name}_{variant}"
                rng = np.random.default_rng([seed, zlib.crc32(pair_id.encode()), zlib.crc32(task.encode())])
                source, target = spec.fn(rng, variant, image)
                write_pair(raw, spec.category, task, pair_id, source, target)
                written[task] += 1
    return written, skipped


def select_tasks(names: list[str] | None) -> list[TaskSpec]:
    """The photo tasks named (all when None); an unknown name is a UserError listing the known ones."""
    unknown = sorted(set(names or ()) - PHOTO_TASKS.keys())
    if unknown:
        raise UserError(f"--tasks: {', '.join(unknown)} not a photo task; choose from {', '.join(PHOTO_TASKS)}")
    return [PHOTO_TASKS[name] for name in names] if names else list(PHOTO_TASKS.values())


def centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of an (H, W, 3) picture, resized to (size, size, 3)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return resize(image[top : top + side, left : left + side], size)


def is_grey(image: np.ndarray, tolerance: int = 2) -> bool:
    """Whether the channels agree within ``tolerance`` (a grey picture stored as RGB, JPEG noise allowed)."""
    signed = image.astype(np.int16)
    return bool(np.abs(signed - signed[..., :1]).max() <= tolerance)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.photos", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="a folder of photographs (searched at any depth)")
    parser.add_argument("--out", type=Path, required=True, help="RAW: the task folders' root (pico prep folders RAW)")
    parser.add_argument("--tasks", help=f"comma-separated, default all: {','.join(PHOTO_TASKS)}")
    parser.add_argument("--size", type=int, default=512, help="side of the square pairs, pixels (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the operators' randomness (default 0)")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",") if args.tasks else None

    def body() -> None:
        if args.size < 16:
            raise UserError(f"--size: expected at least 16 pixels, got {args.size}")
        report("data_prep.photos", args.out, *make_photo_tasks(args.src, args.out, tasks, args.size, args.seed))

    return run_recipe("data_prep.photos", body)


if __name__ == "__main__":
    raise SystemExit(main())
