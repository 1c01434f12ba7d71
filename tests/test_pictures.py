"""The one picture reader: every entrance (prep folders -> shard -> training stream, pico infer, suites) gives the
same pixels for one file: EXIF orientation applied, 16-bit / 257, alpha over black, one error message."""

import argparse
import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from pico_lightning.commands import infer
from pico_lightning.data import suites
from pico_lightning.data.schema import encode_png
from pico_lightning.data.stream import decode_panel
from pico_lightning.panels import fit_panel, to_tensor
from pico_lightning.pictures import PICTURE_SUFFIXES, ImageInputError, read_mask, read_picture, to_rgb
from pico_lightning.prep import folders
from pico_lightning.prep.folders import convert_folders

ORIENTATION = 0x0112  # the EXIF tag; 6 = "rotate 90 degrees clockwise to display"


def _rotated_jpeg(path, width=24, height=16):
    """A JPEG stored ``width x height`` whose EXIF says to show it turned 90 degrees clockwise."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = (250, 10, 10)  # red top-left quadrant, as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[ORIENTATION] = 6
    image.save(path, exif=exif, quality=95)
    with Image.open(path) as stored:
        return np.asarray(stored.convert("RGB"))  # the pixels as stored, before the orientation


def _sixteen_bit_png(path, width=24, height=16):
    ramp = np.linspace(0, 65535, width * height).round().astype(np.uint16).reshape(height, width)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    return ramp


@pytest.fixture
def raw(tmp_path):
    """A folder tree of three pairs: EXIF-rotated JPEG inputs, 16-bit PNG outputs (the prep layout)."""
    task = tmp_path / "src" / "restoration" / "denoise"
    for side in ("input", "output"):
        (task / side).mkdir(parents=True)
    for stem in ("a", "b", "c"):
        stored = _rotated_jpeg(task / "input" / f"{stem}.jpg")
        ramp = _sixteen_bit_png(task / "output" / f"{stem}.png")
    return task, stored, ramp


def _shard_members(out_dir, shards) -> dict[str, bytes]:
    members = {}
    for shard in shards:
        with tarfile.open(out_dir / shard) as tar:
            members |= {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return members


def test_prep_shard_stream_and_infer_read_the_same_pixels(raw, tmp_path):
    task, stored, ramp = raw
    summary = convert_folders(task.parents[1], tmp_path / "out")
    assert summary["written"] == 3
    members = _shard_members(tmp_path / "out", summary["shards"])
    files = [task / "input" / "a.jpg", task / "output" / "a.png", task / "input" / "b.jpg"]
    exemplar, exemplar_out, query = infer.read_inputs(argparse.Namespace(exemplar=files[:2], query=files[2]))

    assert exemplar.shape == (24, 16, 3)  # shown upright: 16 wide, 24 high
    assert np.array_equal(exemplar, np.rot90(stored, k=-1))  # turned clockwise, pixel for pixel
    assert np.array_equal(exemplar_out[..., 0], np.round(ramp / 257).astype(np.uint8))  # full range onto 8 bits
    assert exemplar_out[-1, -1].tolist() == [255] * 3 and exemplar_out[0, 0].tolist() == [0] * 3
    assert np.array_equal(query, exemplar)

    for picture, member in ((exemplar, "a.input.png"), (exemplar_out, "a.output.png")):
        data = members[f"denoise/default/{member}"]
        assert np.array_equal(read_picture(data), picture)  # the shard holds what pico infer reads
        panel = fit_panel(to_tensor(picture), 16, "resize")  # the panel pico infer composes
        expected = ((panel + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        assert torch.equal(decode_panel(data, 16, "resize"), expected)  # the training stream's panel


def test_stored_8bit_pngs_decode_exactly_as_pillow_decodes_them():
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = encode_png(pixels)
    with Image.open(io.BytesIO(data)) as image:
        assert np.array_equal(read_picture(data), np.asarray(image.convert("RGB")))
    assert np.array_equal(decode_panel(data, 32, "resize").permute(1, 2, 0).numpy(), pixels)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("RGBA", (2, 2), (200, 100, 50, 0)), [0, 0, 0]),  # transparent: black
        (Image.new("RGBA", (2, 2), (200, 100, 50, 255)), [200, 100, 50]),
        (Image.new("LA", (2, 2), (90, 255)), [90] * 3),
        (Image.new("L", (2, 2), 77), [77] * 3),
        (Image.new("1", (2, 2), 1), [255] * 3),
        (Image.new("CMYK", (2, 2), (0, 0, 0, 0)), [255] * 3),
        (Image.new("I", (2, 2), 257 * 100), [100] * 3),
        (Image.new("I", (2, 2), 70000), [255] * 3),  # clipped
        (Image.new("F", (2, 2), 257.0 * 3), [3] * 3),
        (Image.fromarray(np.full((2, 2), 255, np.uint16)), [1] * 3),  # 16-bit 255 is dark, not white
    ],
    ids=["rgba_clear", "rgba_opaque", "la", "grey", "bilevel", "cmyk", "i32", "i32_clipped", "float", "i16_low"],
)
def test_every_mode_converts_one_way(image, expected):
    assert to_rgb(image)[0, 0].tolist() == expected and to_rgb(image).dtype == np.uint8


def test_a_palette_with_a_transparent_index_composites_over_black(tmp_path):
    image = Image.new("P", (2, 2), 1)
    image.putpalette([0, 0, 0, 250, 250, 250])
    image.save(tmp_path / "p.png", transparency=1)
    assert read_picture(tmp_path / "p.png")[0, 0].tolist() == [0, 0, 0]
    image.save(tmp_path / "opaque.png")
    assert read_picture(tmp_path / "opaque.png")[0, 0].tolist() == [250] * 3


def test_masks_count_any_channel_and_raw_labels(tmp_path):
    Image.fromarray(np.array([[0, 1], [0, 65535]], np.uint16)).save(tmp_path / "labels.png")
    assert read_mask(tmp_path / "labels.png").tolist() == [[False, True], [False, True]]
    red = np.zeros((2, 2, 3), np.uint8)
    red[0, 0] = (128, 0, 0)
    assert read_mask(encode_png(red)).tolist() == [[True, False], [False, False]]


def test_unreadable_truncated_and_missing_files_say_one_line(tmp_path):
    with pytest.raises(ImageInputError, match=r"nope\.png: file not found$"):
        read_picture(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("not a png")
    with pytest.raises(ImageInputError, match=r"text\.png: not a readable image \(.+\)$"):
        read_picture(tmp_path / "text.png")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match=r"cut\.png: not a readable image") as err:
        read_picture(tmp_path / "cut.png")
    assert "\n" not in str(err.value)
    with pytest.raises(ImageInputError, match=r"^b'\.png: not a readable image"):
        read_picture(data[:100], "b'.png")


def test_one_suffix_list_for_every_entrance():
    assert folders.PICTURE_SUFFIXES is suites.PICTURE_SUFFIXES is PICTURE_SUFFIXES
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"} == set(PICTURE_SUFFIXES)
