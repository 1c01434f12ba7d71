"""COCO-style instance annotations -> perception tasks: masks, instances, boxes, and one mask task per category.

    python -m data_prep.coco instances.json --images IMAGES --out RAW [--min-images 4]

Reads the COCO format (``images``: id, file_name, width, height; ``annotations``: image_id, category_id, bbox
[x, y, w, h], segmentation as polygons or run-length encoding, compressed or not; ``categories``: id, name), as
COCO, LVIS and most instance-segmentation exports write it, without pycocotools. Writes, under RAW/perception/:

    coco_foreground       the photograph -> every annotated object white on black
    coco_instances        the photograph -> each object in a colour of its own on black (larger objects first)
    coco_boxes            the photograph -> the photograph with every object's box outlined in red
    coco_<category>_mask  the photograph -> that category's objects white on black (prompt.txt: "<category>
                          mask"), for each category seen in at least --min-images images

Pictures keep their size; a picture whose size differs from its annotation's, a missing or unreadable one and one
without annotations are skipped and listed.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data_prep.layout import report, run_recipe, write_pair
from pico_lightning.errors import UserError
from pico_lightning.pictures import ImageInputError, read_picture
from pico_lightning.prep.pixels import grey_rgb

CATEGORY = "perception"
BOX_COLOUR = (255, 0, 0)


def make_coco_tasks(annotations: Path, images: Path, raw: Path, min_images: int = 4) -> tuple[Counter, dict]:
    """Write the perception pairs of a COCO annotation file into ``raw``; returns (pairs per task, skipped)."""
    coco = read_coco(annotations)
    names = {category["id"]: task_name(category["name"]) for category in coco["categories"]}
    by_image = defaultdict(list)
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    seen_in = Counter(name for anns in by_image.values() for name in {names[a["category_id"]] for a in anns})
    written, skipped = Counter(), {"missing": [], "unreadable": [], "size differs": [], "no annotations": []}
    for image in coco["images"]:
        anns = sorted(by_image.get(image["id"], []), key=lambda a: -a["bbox"][2] * a["bbox"][3])
        photo = _read(images / image["file_name"], image, bool(anns), skipped)
        if photo is None:
            continue
        pair_id = Path(image["file_name"]).with_suffix("").as_posix().replace("/", "-")
        masks = [instance_mask(a["segmentation"], image["height"], image["width"]) for a in anns]
        outputs = {
            "coco_foreground": grey_rgb(np.any(masks, axis=0)),
            "coco_instances": colour_instances(masks),
            "coco_boxes": draw_boxes(photo, [a["bbox"] for a in anns]),
        }
        for name in {names[a["category_id"]] for a in anns if seen_in[names[a["category_id"]]] >= min_images}:
            chosen = [mask for mask, a in zip(masks, anns, strict=True) if names[a["category_id"]] == name]
            outputs[f"coco_{name}_mask"] = grey_rgb(np.any(chosen, axis=0))
            (raw / CATEGORY / f"coco_{name}_mask").mkdir(parents=True, exist_ok=True)
            (raw / CATEGORY / f"coco_{name}_mask" / "prompt.txt").write_text(f"{name.replace('_', ' ')} mask\n")
        for task, target in outputs.items():
            write_pair(raw, CATEGORY, task, pair_id, photo, target)
            written[task] += 1
    return written, skipped


def read_coco(path: Path) -> dict:
    """The annotation file's images, annotations and categories; a UserError naming what is missing."""
    try:
        coco = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable COCO annotation file ({type(err).__name__}: {err})") from None
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(coco.get(key), list)]
    if missing:
        raise UserError(f"{path}: expected COCO's lists images, annotations and categories; {missing[0]} is missing")
    return coco


def task_name(category: str) -> str:
    """A category name as a task folder's: ``traffic light`` -> ``traffic_light``."""
    return re.sub(r"[^a-z0-9]+", "_", category.lower()).strip("_")


def _read(path: Path, image: dict, annotated: bool, skipped: dict[str, list[str]]) -> np.ndarray | None:
    """The photograph, or None with the reason recorded in ``skipped``."""
    reason = "no annotations" if not annotated else "missing" if not path.is_file() else ""
    photo = None
    if not reason:
        try:
            photo = read_picture(path)
            reason = "size differs" if photo.shape[:2] != (image["height"], image["width"]) else ""
        except ImageInputError:
            reason = "unreadable"
    if reason:
        skipped[reason].append(image["file_name"])
        return None
    return photo


def instance_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """One object's (height, width) bool mask from COCO polygons or run-length encoding."""
    if isinstance(segmentation, list):  # polygons: [[x1, y1, x2, y2, ...], ...]
        canvas = Image.new("L", (width, height))
        for polygon in segmentation:
            ImageDraw.Draw(canvas).polygon([float(v) for v in polygon], fill=1)
        return np.asarray(canvas, bool)
    counts = segmentation["counts"]
    counts = rle_counts(counts) if isinstance(counts, str) else list(counts)
    rows, cols = segmentation["size"]
    values = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)  # runs of 0, 1, 0, ...
    return values.reshape(cols, rows).T  # COCO runs go down the columns


def rle_counts(text: str) -> list[int]:
    """pycocotools' compressed counts string -> run lengths (rleFrString: 5 bits a character, deltas after the
    second run)."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            code = ord(text[position]) - 48
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position, shift = position + 1, shift + 5
            if not more and code & 0x10:
                value |= -1 << shift
        counts.append(value + counts[-2] if len(counts) > 2 else value)
    return counts


def colour_instances(masks: list[np.ndarray]) -> np.ndarray:
    """Masks (largest first) painted in turn, each in its own hue (golden-ratio steps), on black."""
    out = np.zeros((*masks[0].shape, 3), np.uint8)
    for index, mask in enumerate(masks):
        red, green, blue = colorsys.hsv_to_rgb(index * 0.618034 % 1, 0.85, 1.0)
        out[mask] = (round(red * 255), round(green * 255), round(blue * 255))
    return out


def draw_boxes(photo: np.ndarray, boxes: list[list[float]]) -> np.ndarray:
    """The photograph with each [x, y, w, h] box outlined (1 px per 128 px of the short side)."""
    canvas = Image.fromarray(photo)
    width = max(1, round(min(photo.shape[:2]) / 128))
    for x, y, w, h in boxes:
        ImageDraw.Draw(canvas).rectangle([x, y, x + w - 1, y + h - 1], outline=BOX_COLOUR, width=width)
    return np.asarray(canvas)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.coco", description=__doc__.split("\n\n")[0])
    parser.add_argument("annotations", type=Path, help="a COCO-style instances JSON file")
    parser.add_argument("--images", type=Path, required=True, help="the folder its file_name entries start from")
    parser.add_argument("--out", type=Path, required=True, help="RAW: the task folders' root (pico prep folders RAW)")
    parser.add_argument("--min-images", type=int, default=4, help="images a category needs for a task of its own")
    args = parser.parse_args(argv)

    def body() -> None:
        result = make_coco_tasks(args.annotations, args.images, args.out, args.min_images)
        report("data_prep.coco", args.out, *result)

    return run_recipe("data_prep.coco", body)


if __name__ == "__main__":
    raise SystemExit(main())
