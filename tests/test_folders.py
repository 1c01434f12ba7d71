"""The raw-folder converter: pairs written as RGB, every skipped file reported, clear error on no pairs."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from pico_lightning.data.schema import INDEX_NAME
from pico_lightning.prep.folders import category_of, convert_folders


def _save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _rgb(value, size=(6, 4)):
    return Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8))


@pytest.fixture
def raw(tmp_path):
    """A raw layout with good pairs in five image modes, plus one of each problem the converter reports."""
    src = tmp_path / "src"
    denoise = src / "restoration" / "denoise"
    modes = {
        "a": _rgb(10),
        "b": Image.new("L", (6, 4), 200),
        "c": Image.new("RGBA", (6, 4), (255, 0, 0, 255)),
        "d": _rgb(30).convert("P", palette=Image.Palette.ADAPTIVE),
        "e": Image.fromarray(np.full((4, 6), 128 * 257, np.uint16)),
        "f": _rgb(50),
    }
    for stem, image in modes.items():
        _save(denoise / "input" / f"{stem}.png", image)
        _save(denoise / "output" / f"{stem}.png", _rgb(100))
    good = (denoise / "input" / "f.png").read_bytes()
    (denoise / "input" / "f.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    _save(denoise / "input" / "g.jpg", _rgb(70))  # no output: unpaired
    seg = src / "semantic_perception" / "cat_seg"
    for stem in ("1", "2"):
        _save(seg / "input" / f"{stem}.jpg", _rgb(90, (8, 8)))
        _save(seg / "output" / f"{stem}.png", Image.new("1", (8, 8), 1))
    (seg / "prompt.txt").write_text("Segment the cat\n")
    _save(src / "painting" / "style" / "input" / "x.png", _rgb(0))  # unknown category
    (src / "README.md").write_text("notes")
    return src


def test_convert_writes_good_pairs_and_reports_the_rest(raw, tmp_path):
    out = tmp_path / "out"
    summary = convert_folders(raw, out)
    assert summary["written"] == 7 and summary["num_tasks"] == 2
    assert summary["skipped"] == {
        "unpaired": ["restoration/denoise/input/g.jpg", "restoration/denoise/output/f.png"],
        "unreadable": ["restoration/denoise/input/f.png"],
        "unknown_category": ["painting"],
        "unexpected": ["README.md"],
    }
    index = json.loads((out / INDEX_NAME).read_text())
    assert index["tasks"]["denoise"]["counts"] == {"train": 3, "val": 2, "test": 0}
    assert index["tasks"]["cat_seg"]["category"] == "perception"
    assert index["tasks"]["cat_seg"]["prompt"] == "Segment the cat"
    assert index["tasks"]["denoise"]["prompt"] == "Restore"

    inputs = {}
    for shard in summary["shards"]:
        with tarfile.open(out / shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith("input.png"):
                    inputs[member.name.split(".")[0]] = Image.open(io.BytesIO(tar.extractfile(member).read()))
    assert all(image.mode == "RGB" for image in inputs.values())
    pixel = {key: np.asarray(image)[0, 0].tolist() for key, image in inputs.items()}
    assert pixel["denoise/default/b"] == [200] * 3  # grey
    assert pixel["denoise/default/c"] == [255, 0, 0]  # RGBA
    assert pixel["denoise/default/d"] == [30] * 3  # palette
    assert pixel["denoise/default/e"] == [128] * 3  # 16-bit, scaled not clipped


def test_convert_rejects_a_source_without_pairs(tmp_path):
    src = tmp_path / "src"
    _save(src / "restoration" / "denoise" / "input" / "a.png", _rgb(0))
    with pytest.raises(ValueError, match=r"no readable input/output pairs.*<category>/<task>"):
        convert_folders(src, tmp_path / "out")
    with pytest.raises(ValueError, match="not a directory"):
        convert_folders(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("manipulation_editing", "manipulation"),
        ("Generative-Manipulation", "manipulation"),
        ("image editing", "manipulation"),
        ("restoration_enhancement", "restoration"),
        ("physical_geometric_estimation", "estimation"),
        ("semantic_perception", "perception"),
        ("segmentation", "perception"),
        ("painting", None),
        ("semantic_editing", None),  # two families: ambiguous, so not guessed
    ],
)
def test_category_folders_are_named_by_a_family_word(name, family):
    assert category_of(name) == family


def test_an_aliased_category_is_converted(raw, tmp_path):
    (raw / "restoration").rename(raw / "restoration_enhancement")
    (raw / "painting").rename(raw / "manipulation_editing")
    _save(raw / "manipulation_editing" / "style" / "output" / "x.png", _rgb(9))
    summary = convert_folders(raw, tmp_path / "out")
    assert summary["num_tasks"] == 3 and summary["skipped"]["unknown_category"] == []
    index = json.loads((tmp_path / "out" / INDEX_NAME).read_text())
    assert index["tasks"]["style"]["category"] == "manipulation"


def test_a_prompt_file_that_is_not_text_is_reported_and_the_family_label_used(raw, tmp_path):
    (raw / "restoration" / "denoise" / "prompt.txt").write_bytes(b"\xff\xfe\x00 not utf-8")
    summary = convert_folders(raw, tmp_path / "out")
    assert "restoration/denoise/prompt.txt" in summary["skipped"]["unreadable"]
    assert json.loads((tmp_path / "out" / INDEX_NAME).read_text())["tasks"]["denoise"]["prompt"] == "Restore"
