"""The raw-folder converter: pairs written as RGB, every skipped file reported, clear error on no pairs; held-out
tasks, named suites (masks told from pictures), shards that mix tasks, one-line errors naming the flag."""

import io
import json
import re
import tarfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from pico_lightning.config import DataConfig
from pico_lightning.data import stream as stream_module
from pico_lightning.data.datamodule import VisRelDataModule
from pico_lightning.data.schema import INDEX_NAME
from pico_lightning.data.suites import load_suite
from pico_lightning.pictures import read_picture
from pico_lightning.prep import photos
from pico_lightning.prep.folder_suites import parse_names, parse_suites
from pico_lightning.prep.folders import category_of, convert_folders
from pico_lightning.prep.pixels import grey, grey_rgb, is_mask


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


# A lab's data: 6 tasks x 24 pairs of 16 px photo crops (scikit-image's bundled pictures), one a mask task.
LAB_TASKS = {
    "invert": ("restoration", lambda x: 255 - x),
    "halve": ("restoration_enhancement", lambda x: x // 2),
    "flip": ("physical_geometric_estimation", lambda x: x[:, ::-1]),
    "bright_mask": ("semantic_perception", lambda x: grey_rgb(grey(x) > 0.5)),
    "grey": ("manipulation_editing", lambda x: grey_rgb(grey(x))),
    "swap": ("generative_manipulation", lambda x: x[..., ::-1]),
}
LAB_PAIRS = 24


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    src, rng = tmp_path_factory.mktemp("lab"), np.random.default_rng(0)
    for task, (category, make) in LAB_TASKS.items():
        for i in range(LAB_PAIRS):
            picture = photos.colour_photo(rng, 16)
            _save(src / category / task / "input" / f"{i:03d}.png", Image.fromarray(picture))
            _save(
                src / category / task / "output" / f"{i:03d}.png", Image.fromarray(np.ascontiguousarray(make(picture)))
            )
    return src


@pytest.fixture(scope="module")
def converted(lab, tmp_path_factory):
    """The lab's data with one task held out and two suites: one of masks, one of a held-in and a held-out task."""
    out = tmp_path_factory.mktemp("converted") / "data"
    suites = {"masks": ["bright_mask"], "edits": ["grey", "swap"]}
    return convert_folders(lab, out, held_out=["swap"], suites=suites, seed=3), out


def _index(out) -> dict:
    return json.loads((out / INDEX_NAME).read_text())


def test_held_out_tasks_are_test_only_and_marked_in_the_index(converted):
    summary, out = converted
    index = _index(out)
    assert summary["held_out"] == ["swap"] and index["tasks"]["swap"]["held_out"] is True
    assert index["tasks"]["swap"]["counts"] == {"train": 0, "val": 0, "test": LAB_PAIRS}
    assert index["tasks"]["grey"]["held_out"] is False
    assert index["tasks"]["grey"]["counts"] == {"train": 20, "val": 4, "test": 0}
    assert index["splits"] == {"train": 100, "val": 20, "test": 24}


def test_default_shards_mix_the_tasks_and_each_holds_an_episode_of_train_pairs(converted):
    summary, out = converted
    index = _index(out)
    # 5 held-in tasks x 10 train blocks of 2 pairs: at most one shard per train block (< the 128 readers wanted)
    assert len(summary["shards"]) == len(index["shards"]) == 50
    assert sum(index["shard_sizes"]) == len(LAB_TASKS) * LAB_PAIRS
    for samples in index["shard_samples"]:
        train = Counter((task, variant) for task, variant, _, split, _ in samples if split == "train")
        assert max(train.values()) >= 2
    tasks = [{task for task, *_ in samples} for samples in index["shard_samples"]]
    held_in = set(LAB_TASKS) - {"swap"}
    assert all(set().union(*tasks[i : i + 5]) >= held_in for i in range(0, 50, 5))  # every 5 shards: every task


def test_shards_n_overrides_the_count_and_too_many_is_refused(lab, tmp_path):
    summary = convert_folders(lab, tmp_path / "eight", num_shards=8)
    sizes = _index(tmp_path / "eight")["shard_sizes"]
    assert len(summary["shards"]) == 8 and max(sizes) - min(sizes) <= 3  # whole blocks of 2 or 3, dealt evenly
    with pytest.raises(ValueError, match=r"--shards: 73 shards .* at most 72"):
        convert_folders(lab, tmp_path / "many", num_shards=73)


def test_suites_pair_each_evaluation_pair_with_an_exemplar_of_its_task(converted, lab):
    summary, out = converted
    assert summary["suites"] == _index(out)["suites"]
    assert summary["suites"]["masks"] == {
        "file": "suites/masks.tar",
        "kind": "mask",
        "num_episodes": 4,  # the mask task's val pairs
        "tasks": {"bright_mask": 4},
    }
    assert summary["suites"]["edits"]["kind"] == "image"
    assert summary["suites"]["edits"]["tasks"] == {"grey": 4, "swap": LAB_PAIRS}  # held in: val; held out: test
    val = {f"{i:03d}" for i in range(20, 24)}
    for name, tasks in (("masks", ["bright_mask"]), ("edits", ["grey", "swap"])):
        episodes = load_suite(out, name)
        assert {e.task for e in episodes} == set(tasks)
        for episode in episodes:
            category = LAB_TASKS[episode.task][0]
            a, b = (_stem_of(lab / category / episode.task, panel) for panel in episode.panels[::2])
            assert a != b and (episode.task == "swap" or {a, b} <= val)
            assert episode.episode_id == f"{episode.task}-{b}" and episode.kind == summary["suites"][name]["kind"]


def _stem_of(task_dir, picture) -> str:
    """The id of the input picture in ``task_dir`` equal to ``picture``."""
    found = [p.stem for p in (task_dir / "input").iterdir() if np.array_equal(read_picture(p), picture)]
    assert len(found) == 1
    return found[0]


def test_suites_are_the_same_for_a_seed(lab, converted, tmp_path):
    again = convert_folders(lab, tmp_path / "again", held_out=["swap"], suites={"masks": ["bright_mask"]}, seed=3)
    assert (tmp_path / "again" / "suites" / "masks.tar").read_bytes() == (
        converted[1] / "suites" / "masks.tar"
    ).read_bytes()
    assert again["suites"]["masks"] == converted[0]["suites"]["masks"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"held_out": ["nope"]}, "--held-out: no task 'nope' in SRC"),
        ({"held_out": list(LAB_TASKS)}, "--held-out: every task is held out"),
        ({"suites": {"s": ["grey", "nope"]}}, "--suite s=grey,nope: no task 'nope' in SRC"),
    ],
)
def test_unknown_tasks_are_one_line_naming_the_flag_and_the_task(lab, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        convert_folders(lab, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_a_suite_task_without_evaluation_pairs_is_refused(raw, tmp_path):
    with pytest.raises(ValueError, match=r"--suite s: task 'cat_seg' has 2 pairs, too few"):
        convert_folders(raw, tmp_path / "out", suites={"s": ["cat_seg"]})
    with pytest.raises(ValueError, match=r"--held-out: task 'x' has 1 pair"):
        _save(raw / "restoration" / "x" / "input" / "1.png", _rgb(1))
        _save(raw / "restoration" / "x" / "output" / "1.png", _rgb(2))
        convert_folders(raw, tmp_path / "out", held_out=["x"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["seg"], "--suite seg: expected NAME=TASK"),
        (["seg="], "--suite seg=: expected NAME=TASK"),
        (["a b=t"], "the name 'a b' must be"),
        (["held_out=t"], "'held_out' is a reserved suite name"),
        (["held_in=t"], "'held_in' is a reserved suite name"),
        (["s=a", "s=b"], "suite 's' is given twice"),
        (["s=a,,b"], "an empty task name"),
    ],
)
def test_malformed_suites_are_refused(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_suites(values)


def test_suite_and_held_out_lists_are_comma_separated_and_repeatable():
    assert parse_suites(["seg=a, b,a", "edits=c"]) == {"seg": ("a", "b"), "edits": ("c",)}
    assert parse_names(["a,b", "c", "a"], "--held-out") == ("a", "b", "c")


@pytest.mark.parametrize(
    ("picture", "mask"),
    [
        (grey_rgb(np.eye(4, dtype=bool)), True),  # white on black
        (np.zeros((4, 4, 3), np.uint8), True),  # an empty mask
        (np.where(np.eye(4, dtype=bool)[..., None], (200, 220, 240), (10, 0, 30)).astype(np.uint8), True),
        (grey_rgb(np.where(np.eye(4, dtype=bool), 0.2, 0.1)), False),  # two darks: the metrics see no object
        (np.where(np.eye(4, dtype=bool)[..., None], (255, 0, 0), (0, 0, 0)).astype(np.uint8), False),  # red is dark
        (grey_rgb(np.arange(16).reshape(4, 4) % 3 / 2), False),  # three values
    ],
)
def test_a_mask_is_two_colours_either_side_of_mid_grey(picture, mask):
    assert is_mask(picture) is mask


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")  # none is started here
@pytest.mark.parametrize(("world", "ranks", "shared"), [(2, (0, 1), False), (32, (0, 17, 31), True)])
def test_every_reader_of_a_cluster_forms_train_batches(converted, monkeypatch, world, ranks, shared):
    """144 pairs feed world x 4 loader workers: 2 x 4 read shards of their own, 32 x 4 (128 readers) share them."""
    monkeypatch.setenv("WORLD_SIZE", str(world))
    for rank in ranks:
        monkeypatch.setenv("RANK", str(rank))
        cfg = DataConfig(root=str(converted[1]), num_workers=4, panel_size=16, epoch_batches=2)
        module = VisRelDataModule(cfg, global_batch_size=2 * world)
        module.setup("fit")
        loader = module.train_dataloader()
        assert loader.state.shared is shared
        for worker in range(4):  # each loader worker's stream, run in this process
            monkeypatch.setattr(stream_module, "_worker", lambda worker=worker: (worker, 4))
            batch = next(iter(loader.pipeline[0].dataset))
            assert batch["grid"].shape == (2, 3, 32, 32) and set(batch["task"]) <= set(LAB_TASKS) - {"swap"}
