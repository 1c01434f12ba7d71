"""data_prep/ recipes on small fixtures in their own formats: photographs, COCO instances (polygons, RLE both ways),
depth maps beside photographs; what they write is accepted by `pico prep folders`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_prep import coco, depth, photos
from pico_lightning.cli import main

SIZE = 32


def picture(seed: int, height: int = 40, width: int = 48, grey: bool = False) -> np.ndarray:
    """A smooth random picture (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (5, 6, 1 if grey else 3), dtype=np.uint8).repeat(3 if grey else 1, axis=2)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))


@pytest.fixture
def photo_dir(tmp_path):
    src = tmp_path / "photos"
    (src / "day").mkdir(parents=True)
    Image.fromarray(picture(0)).save(src / "a.jpg", quality=95)
    Image.fromarray(picture(1, 48, 40)).save(src / "day" / "a.png")
    Image.fromarray(picture(2)).save(src / "b.png")
    Image.fromarray(picture(3, grey=True)).save(src / "grey.png")
    (src / "broken.jpg").write_bytes(b"not a picture")
    (src / ".hidden.png").write_bytes(b"ignored")
    return src


def folders_accept(raw, out) -> dict:
    """`pico prep folders RAW --out DATA` must succeed; its index."""
    assert main(["prep", "folders", str(raw), "--out", str(out)]) == 0
    return json.loads((out / "index.json").read_text())


def test_photos_become_one_task_per_operator_variant(photo_dir, tmp_path, capsys):
    raw = tmp_path / "raw"
    assert photos.main([str(photo_dir), "--out", str(raw), "--tasks", "denoise,flip,colorize", "--size", "32"]) == 0
    said = capsys.readouterr().out
    assert "skipped 1 (unreadable): broken.jpg" in said and "skipped 1 (grey, so no colourisation): grey.png" in said
    tasks = sorted(p.name for p in (raw / "restoration").iterdir())
    assert tasks == ["denoise_gaussian_high", "denoise_gaussian_low", "denoise_salt_pepper"]
    ids = sorted(p.stem for p in (raw / "estimation" / "flip_vertical" / "input").iterdir())
    assert ids == ["a", "b", "day-a", "grey"]
    assert sorted(p.stem for p in (raw / "manipulation" / "colorize_grey" / "output").iterdir()) == ["a", "b", "day-a"]
    flipped_in, flipped_out = (
        np.asarray(Image.open(raw / "estimation" / "flip_vertical" / side / "b.png")) for side in ("input", "output")
    )
    assert flipped_in.shape == (SIZE, SIZE, 3) and np.array_equal(flipped_out, flipped_in[::-1])
    index = folders_accept(raw, tmp_path / "data")
    assert len(index["tasks"]) == 3 + 2 + 2 and index["num_samples"] == 3 * 4 + 2 * 4 + 2 * 3
    assert index["tasks"]["denoise_salt_pepper"]["category"] == "restoration"


def test_photos_are_the_same_whatever_else_is_in_the_folder(photo_dir, tmp_path):
    photos.make_photo_tasks(photo_dir, tmp_path / "all", ["denoise"], SIZE)
    (photo_dir / "a.jpg").unlink()
    photos.make_photo_tasks(photo_dir, tmp_path / "fewer", ["denoise"], SIZE)
    path = "restoration/denoise_gaussian_high/input/b.png"
    assert np.array_equal(*(np.asarray(Image.open(tmp_path / run / path)) for run in ("all", "fewer")))


def test_photos_unknown_task_is_one_line(photo_dir, tmp_path, capsys):
    assert photos.main([str(photo_dir), "--out", str(tmp_path / "raw"), "--tasks", "depth"]) == 2
    assert capsys.readouterr().err.startswith("data_prep.photos: error: --tasks: depth not a photo task; choose from")


def compressed(counts: list[int]) -> str:
    """pycocotools' rleToString, to write the compressed fixture."""
    text = []
    for index, value in enumerate(counts):
        value -= counts[index - 2] if index > 2 else 0
        more = True
        while more:
            code, value = value & 0x1F, value >> 5
            more = value != -1 if code & 0x10 else value != 0
            text.append(chr((code | (0x20 if more else 0)) + 48))
    return "".join(text)


def uncompressed(mask: np.ndarray) -> list[int]:
    """COCO's column-major run lengths of a bool mask, starting with a run of 0s."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], edges])).tolist()


def test_coco_masks_from_polygons_and_both_rles(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    height, width = 20, 24
    dog = np.zeros((height, width), bool)
    dog[12:18, 3:20] = True
    cat = np.zeros((height, width), bool)
    cat[1:6, 14:22] = True
    for name in ("one.png", "two.png", "bare.png"):
        Image.fromarray(picture(len(name), height, width)).save(images / name)
    annotations = tmp_path / "instances.json"
    square = [[2, 2, 9, 2, 9, 9, 2, 9]]  # a polygon: x, y pairs
    annotations.write_text(
        json.dumps(
            {
                "images": [
                    {"id": i, "file_name": n, "height": height, "width": width}
                    for i, n in enumerate(("one.png", "two.png", "bare.png", "gone.png"))
                ],
                "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "hot dog"}],
                "annotations": [
                    {"image_id": 0, "category_id": 1, "bbox": [2, 2, 8, 8], "segmentation": square},
                    {
                        "image_id": 0,
                        "category_id": 2,
                        "bbox": [3, 12, 17, 6],
                        "segmentation": {"size": [height, width], "counts": compressed(uncompressed(dog))},
                    },
                    {
                        "image_id": 1,
                        "category_id": 1,
                        "bbox": [14, 1, 8, 5],
                        "segmentation": {"size": [height, width], "counts": uncompressed(cat)},
                    },
                    {"image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1], "segmentation": square},
                ],
            }
        )
    )
    raw = tmp_path / "raw"
    assert coco.main([str(annotations), "--images", str(images), "--out", str(raw), "--min-images", "2"]) == 0
    said = capsys.readouterr().out
    assert "skipped 1 (missing): gone.png" in said and "skipped 1 (no annotations): bare.png" in said
    perception = raw / "perception"
    assert sorted(p.name for p in perception.iterdir()) == [
        "coco_boxes",
        "coco_cat_mask",
        "coco_foreground",
        "coco_instances",
    ]  # hot dog: in 1 image < 2

    def read(task: str, pair: str) -> np.ndarray:
        return np.asarray(Image.open(perception / task / "output" / f"{pair}.png"))[..., 0] > 127

    polygon = np.zeros((height, width), bool)
    polygon[2:10, 2:10] = True
    assert np.array_equal(read("coco_foreground", "one"), polygon | dog)
    assert np.array_equal(read("coco_cat_mask", "one"), polygon) and np.array_equal(read("coco_cat_mask", "two"), cat)
    colours = np.asarray(Image.open(perception / "coco_instances" / "output" / "one.png"))
    assert len({tuple(colours[14, 10]), tuple(colours[5, 5]), (0, 0, 0)}) == 3  # dog, cat, background
    assert (perception / "coco_cat_mask" / "prompt.txt").read_text() == "cat mask\n"
    boxes = np.asarray(Image.open(perception / "coco_boxes" / "output" / "two.png"))
    assert tuple(boxes[1, 14]) == (255, 0, 0)
    index = folders_accept(raw, tmp_path / "data")
    assert index["tasks"]["coco_cat_mask"]["prompt"] == "cat mask" and index["num_samples"] == 4 * 2


def test_rle_counts_decode_pycocotools_strings():
    counts = [5, 3, 120, 7, 0, 64, 1]
    assert coco.rle_counts(compressed(counts)) == counts


def test_depth_maps_beside_photographs(tmp_path, capsys):
    src = tmp_path / "scans"
    src.mkdir()
    height, width = 20, 24
    for name in ("near", "far", "alone", "rgb"):
        Image.fromarray(picture(len(name), height, width)).save(src / f"{name}.png")
    millimetres = np.tile(np.linspace(500, 4000, width), (height, 1)).astype(np.uint16)
    millimetres[:, :3] = 0  # no reading
    Image.fromarray(millimetres).save(src / "near_depth.png")  # 16-bit PNG
    Image.fromarray(np.full((height, width), 2.5, np.float32)).save(src / "far_depth.tif")  # float TIFF, metres
    Image.fromarray(picture(9, height, width)).save(src / "rgb_depth.png")
    raw = tmp_path / "raw"
    assert depth.main([str(src), "--out", str(raw)]) == 0
    said = capsys.readouterr().out
    assert "skipped 1 (no depth map): alone.png" in said and "skipped 1 (not one channel): rgb_depth.png" in said
    grey = np.asarray(Image.open(raw / "estimation" / "depth_grey" / "output" / "near.png"))[..., 0]
    assert (grey[:, :3] == 0).all() and grey[0, 3] == 255 and grey[0, -1] == 0  # no reading, nearest, farthest
    assert (np.diff(grey[0, 3:].astype(int)) <= 0).all()  # farther is darker
    jet = np.asarray(Image.open(raw / "estimation" / "depth_jet" / "output" / "near.png"))
    assert jet[0, 3, 0] > jet[0, 3, 2] and jet[0, -1, 2] > jet[0, -1, 0]  # near red, far blue
    index = folders_accept(raw, tmp_path / "data")
    assert sorted(index["tasks"]) == ["depth_grey", "depth_jet"] and index["num_samples"] == 4
