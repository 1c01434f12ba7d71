"""Evaluation suites: deterministic procedural suites, tar round trip, concept control, PerSeg folders."""

from collections import defaultdict

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from pico_lightning.data.suites import (
    SuiteEpisode,
    load_named_suite,
    load_perseg,
    load_suite,
    suite_kind,
    suite_names,
)
from pico_lightning.errors import UserError
from pico_lightning.panels import Layout, fit_panel, to_tensor
from pico_lightning.prep.suites import MARKER, USER_TASKS, build_suites, write_suites

SIZE = 64


@pytest.fixture(scope="module")
def suites():
    return build_suites(seed=0, episodes_per_suite=12, size=SIZE)


def _pixels(episodes):
    return [np.stack(episode.panels).tobytes() for episode in episodes]


def test_suites_are_deterministic_per_seed(suites):
    again = build_suites(seed=0, episodes_per_suite=12, size=SIZE)
    other = build_suites(seed=1, episodes_per_suite=12, size=SIZE)
    for name, episodes in suites.items():
        assert _pixels(episodes) == _pixels(again[name])
        assert _pixels(episodes) != _pixels(other[name])
        assert len(episodes) == 12
        assert len({episode.episode_id for episode in episodes}) == 12
        assert suite_kind(name, episodes) == {"segmentation": "mask", "user_tasks": "image"}[name]
        assert all(panel.shape == (SIZE, SIZE, 3) for episode in episodes for panel in episode.panels)


def test_segmentation_pairs_share_the_query_but_not_the_mask(suites):
    pairs = defaultdict(list)
    for episode in suites["segmentation"]:
        pairs[episode.episode_id.split("-")[0]].append(episode)
    assert len(pairs) == 6
    for first, second in pairs.values():
        assert np.array_equal(first.panels[2], second.panels[2])  # same query B
        assert np.array_equal(first.panels[0], second.panels[0])  # same exemplar picture A
        assert not np.array_equal(first.panels[1], second.panels[1])  # different visual prompt A'
        assert not np.array_equal(first.panels[3], second.panels[3])  # so a different ground truth B'
        for episode in (first, second):
            for mask in (episode.panels[1], episode.panels[3]):
                assert set(np.unique(mask)) == {0, 255}  # white on black, never empty
    assert {episode.task for episode in suites["segmentation"]} == {"colour", "shape", "instance"}


def test_user_tasks_cover_the_four_tasks_with_different_bases(suites):
    episodes = suites["user_tasks"]
    assert [episode.task for episode in episodes[:4]] == list(USER_TASKS)
    for episode in episodes:
        a, a_out, b, b_out = episode.panels
        assert not np.array_equal(a, b)
        assert not np.array_equal(a, a_out) and not np.array_equal(b, b_out)
        if episode.task == "contour_edges":
            assert set(np.unique(np.concatenate([a_out, b_out]))) == {0, 255}
        if episode.task == "sticker_insert":  # the magenta spot is in the input and covered in the output
            for picture, output in ((a, a_out), (b, b_out)):
                spots = [(image == MARKER).all(axis=2).sum() for image in (picture, output)]
                assert spots[0] > spots[1]


def test_write_then_load_round_trip(tmp_path, suites):
    summary = write_suites(tmp_path, suites)
    assert summary["user_tasks"]["tasks"] == {task: 3 for task in USER_TASKS}
    assert sorted(p.name for p in (tmp_path / "suites").iterdir()) == ["segmentation.tar", "user_tasks.tar"]
    for name, episodes in suites.items():
        loaded = load_suite(tmp_path, name)
        assert _pixels(loaded) == _pixels(episodes)
        for mine, theirs in zip(episodes, loaded, strict=True):
            assert (mine.suite, mine.task, mine.episode_id, mine.kind, mine.prompt) == (
                theirs.suite,
                theirs.task,
                theirs.episode_id,
                theirs.kind,
                theirs.prompt,
            )
    reader = wds.WebDataset(str(tmp_path / "suites" / "user_tasks.tar"), shardshuffle=False).decode("rgb8")
    sample = next(iter(reader))
    assert {"a.png", "a_out.png", "b.png", "b_out.png", "json"} <= set(sample)
    first = (tmp_path / "suites" / "segmentation.tar").read_bytes()
    write_suites(tmp_path, suites)
    assert (tmp_path / "suites" / "segmentation.tar").read_bytes() == first  # reproducible bytes


def test_missing_suite_names_the_file_and_what_is_there(tmp_path, suites):
    with pytest.raises(UserError, match=r"segmentation\.tar.*the suites there: none") as err:
        load_suite(tmp_path, "segmentation")
    assert "visrel-lite" not in str(err.value)  # never a hint to write toy data over a user's directory
    assert "--suite segmentation=TASK" in str(err.value)
    write_suites(tmp_path, {"user_tasks": suites["user_tasks"][:2]})
    assert suite_names(tmp_path) == ["user_tasks"] and suite_names("") == []
    with pytest.raises(UserError, match=r"nope\.tar.*the suites there: \['user_tasks'\]"):
        load_named_suite("nope", tmp_path)


def test_any_suite_name_loads_and_one_suite_has_one_kind(tmp_path, suites):
    mixed = suites["segmentation"][:1] + suites["user_tasks"][:1]
    write_suites(tmp_path, {"lab_edges": suites["user_tasks"][:3]})
    assert suite_kind("lab_edges", load_named_suite("lab_edges", tmp_path)) == "image"
    with pytest.raises(ValueError, match="kinds"):  # the writer refuses a suite of two kinds
        write_suites(tmp_path, {"mixed": mixed})
    with pytest.raises(UserError, match=r"suite 'mixed': episodes of kinds \['image', 'mask'\]"):  # a hand-made tar
        suite_kind("mixed", mixed)


def test_episode_grid_blanks_the_target(suites):
    episode = suites["user_tasks"][0]
    layout = Layout(panel_size=32)
    grid, mask, target = episode.grid(layout)
    assert grid.shape == (3, 64, 64) and mask.shape == (1, 64, 64) and target.shape == (3, 32, 32)
    assert torch.all(grid[:, 32:, 32:] == -1) and mask[:, 32:, 32:].eq(1).all() and mask.sum() == 32 * 32
    assert torch.equal(target, fit_panel(to_tensor(episode.panels[3]), 32))
    assert torch.equal(grid[:, :32, 32:], fit_panel(to_tensor(episode.panels[1]), 32))


def test_episode_panels_must_be_uint8():
    with pytest.raises(ValueError, match="uint8"):
        SuiteEpisode("s", "t", "e", [np.zeros((4, 4, 3), np.float32)] * 4, "image", "")


def _perseg_folder(root):
    """dog: 3 images (one a corrupt jpg) with palette-style (128, 0, 0) masks; cat: a single image."""
    rng = np.random.default_rng(0)
    for name, stems in (("dog", ("00", "01", "02")), ("cat", ("00",))):
        (root / "Images" / name).mkdir(parents=True)
        (root / "Annotations" / name).mkdir(parents=True)
        for stem in stems:
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
                root / "Images" / name / f"{stem}.jpg"
            )
            mask = np.zeros((24, 32, 3), np.uint8)
            mask[4:12, 8:20] = (128, 0, 0)
            Image.fromarray(mask).save(root / "Annotations" / name / f"{stem}.png")
    (root / "Images" / "dog" / "02.jpg").write_bytes(b"not a jpeg")


def test_perseg_loader_skips_and_reports_bad_files(tmp_path):
    _perseg_folder(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 2: .*cat: 1 usable.*dog/02\.jpg: not a readable image"):
        episodes = load_perseg(tmp_path)
    assert [(e.task, e.episode_id, e.kind, e.prompt) for e in episodes] == [("dog", "dog-01", "mask", "Segment")]
    a, a_out, b, b_out = episodes[0].panels
    assert a.shape == (24, 32, 3) and a_out.shape == (24, 32, 3)
    expected = np.zeros((24, 32), bool)
    expected[4:12, 8:20] = True
    assert np.array_equal(a_out[..., 0] == 255, expected) and np.array_equal(b_out, a_out)
    assert set(np.unique(a_out)) == {0, 255}


def test_perseg_loader_subsets_and_errors(tmp_path):
    _perseg_folder(tmp_path)
    for stem in ("03", "04"):
        for sub, ext in (("Images", "jpg"), ("Annotations", "png")):
            source = tmp_path / sub / "dog" / f"01.{ext}"
            (tmp_path / sub / "dog" / f"{stem}.{ext}").write_bytes(source.read_bytes())
    with pytest.warns(UserWarning):
        full = load_perseg(tmp_path)
        some = load_perseg(tmp_path, seed=3, max_episodes=2)
        same = load_perseg(tmp_path, seed=3, max_episodes=2)
    assert [e.episode_id for e in full] == ["dog-01", "dog-03", "dog-04"]
    assert [e.episode_id for e in some] == [e.episode_id for e in same] and len(some) == 2
    with pytest.raises(UserError, match=r"Images/<object>/<name>\.jpg"):
        load_perseg(tmp_path / "empty")
