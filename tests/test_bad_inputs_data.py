"""Bad input around data: `pico prep` never replaces a dataset unasked (and then wholly), never writes into its
own source; category folders are matched by family words; a garbage index.json is one line in train and eval."""

import json

import numpy as np
import pytest
from PIL import Image

from pico_lightning import cli
from pico_lightning.config import DataConfig
from pico_lightning.data.datamodule import VisRelDataModule

LITE = ["prep", "visrel-lite", "--samples-per-task", "2", "--size", "16", "--suite-episodes", "1"]


def fails(capsys, argv, *needles):
    """The command exits 2 with exactly one stderr line containing every needle, and no traceback."""
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(needle in err for needle in needles), err


def _raw(root):
    """Two tasks of two pairs: one under a VisRel long name, one under an unknown category."""
    for category, task in (("manipulation_editing", "invert"), ("painting", "oils")):
        for stem in ("1", "2"):
            for side, value in (("input", 40), ("output", 215)):
                path = root / category / task / side / f"{stem}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return root


def test_prep_refuses_an_existing_dataset_then_replaces_it_wholly(capsys, tmp_path):
    out = tmp_path / "data"
    (out / "suites").mkdir(parents=True)
    (out / "suites" / "stale.tar").write_bytes(b"old")
    (out / "notes.txt").write_text("keep me")
    fails(capsys, [*LITE, "--out", str(out), "--overwrite"], "--out", "not a dataset")  # no index.json
    (out / "index.json").write_text("{}")
    fails(capsys, [*LITE, "--out", str(out)], "--out", "--overwrite")
    fails(capsys, ["prep", "folders", str(_raw(tmp_path / "raw")), "--out", str(out)], "--out", "--overwrite")
    assert (out / "notes.txt").read_text() == "keep me"  # refused: untouched
    assert cli.main([*LITE, "--out", str(out), "--overwrite"]) == 0
    assert not (out / "notes.txt").exists() and not (out / "suites" / "stale.tar").exists()  # nothing stale mixed in
    assert (out / "index.json").is_file() and (out / "suites" / "segmentation.tar").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dir left beside it


def test_a_failed_overwrite_keeps_the_old_dataset(capsys, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "index.json").write_text("{}")
    empty = tmp_path / "empty_raw"
    empty.mkdir()
    fails(capsys, ["prep", "folders", str(empty), "--out", str(out), "--overwrite"], "no readable input/output pairs")
    assert (out / "index.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_prep_folders_never_writes_into_its_source(capsys, tmp_path):
    raw = _raw(tmp_path / "raw")
    for out in (raw, raw / "shards", tmp_path):
        fails(capsys, ["prep", "folders", str(raw), "--out", str(out), "--overwrite"], "overlaps SRC")
    assert sorted(p.name for p in raw.iterdir()) == ["manipulation_editing", "painting"]


def test_prep_folders_lists_the_accepted_category_names(capsys, tmp_path):
    assert cli.main(["prep", "folders", str(_raw(tmp_path / "raw")), "--out", str(tmp_path / "d")]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 pairs of 1 tasks" in printed and "skipped (unknown_category): painting" in printed
    assert "manipulation (manipulation, editing" in printed and "restoration (restoration" in printed


def _lab(root):
    """Two tasks of six pairs: ``noise`` (random outputs) and ``spots`` (white-on-black mask outputs)."""
    rng = np.random.default_rng(0)
    for category, task in (("restoration", "noise"), ("perception", "spots")):
        for stem in range(6):
            pictures = {"input": rng.integers(0, 256, (8, 8, 3), np.uint8)}
            masks = np.repeat(rng.random((8, 8, 1)) > 0.5, 3, axis=2).astype(np.uint8) * 255
            pictures["output"] = masks if task == "spots" else rng.integers(0, 256, (8, 8, 3), np.uint8)
            for side, picture in pictures.items():
                path = root / category / task / side / f"{stem}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(picture).save(path)
    return root


def test_prep_folders_holds_tasks_out_and_writes_named_suites(capsys, tmp_path):
    flags = ["--held-out", "spots", "--suite", "masks=spots", "--suite", "both=noise,spots", "--shards", "2"]
    assert cli.main(["prep", "folders", str(_lab(tmp_path / "raw")), "--out", str(tmp_path / "d"), *flags]) == 0
    printed = capsys.readouterr().out
    assert "wrote 12 pairs of 2 tasks in 2 shards" in printed
    assert "held out (test only, the held_out suite): spots" in printed
    assert "suite masks (mask): 6 episodes of spots" in printed  # every held-out pair is a query
    assert "suite both (image): 8 episodes of noise, spots" in printed  # noise's 2 val pairs + spots' 6
    assert sorted(p.name for p in (tmp_path / "d" / "suites").iterdir()) == ["both.tar", "masks.tar"]


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--held-out", "nope"], ["--held-out: no task 'nope'", "noise, spots"]),
        (["--held-out", "noise,spots"], ["--held-out: every task is held out"]),
        (["--suite", "s=noise,nope"], ["--suite s=noise,nope: no task 'nope'"]),
        (["--suite", "held_out=spots"], ["--suite held_out=spots", "reserved"]),
        (["--suite", "held_in=spots"], ["--suite held_in=spots", "reserved"]),
        (["--suite", "s=spots", "--suite", "s=noise"], ["--suite s=noise", "given twice"]),
        (["--suite", "spots"], ["--suite spots: expected NAME=TASK"]),
        (["--shards", "0"], ["--shards: 0 is too small"]),
        (["--shards", "7"], ["--shards: 7 shards would leave some empty", "at most 6"]),
        (["--seed", "-1"], ["--seed: -1"]),
    ],
)
def test_prep_folders_bad_flags_are_one_line_naming_the_flag(capsys, tmp_path, flags, needles):
    fails(capsys, ["prep", "folders", str(_lab(tmp_path / "raw")), "--out", str(tmp_path / "d"), *flags], *needles)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--samples-per-task", "1"], "--samples-per-task: 1"),
        (["--size", "8"], "--size: 8"),
        (["--size", "12800"], "--size: 12800 px is too large"),
        (["--suite-episodes", "0"], "--suite-episodes: 0"),
        (["--seed", "-1"], "--seed: -1"),
    ],
)
def test_prep_visrel_lite_bad_numbers(capsys, tmp_path, flags, needle):
    fails(capsys, ["prep", "visrel-lite", "--out", str(tmp_path / "d"), *flags], needle)
    assert not (tmp_path / "d").exists()


def test_the_smallest_visrel_lite_trains(capsys, tmp_path):
    assert cli.main([*LITE, "--out", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().err == ""  # no progress bar when stderr is not a terminal
    suites = json.loads((tmp_path / "d" / "index.json").read_text())["suites"]  # what the data has, listed
    assert {name: suite["kind"] for name, suite in suites.items()} == {"segmentation": "mask", "user_tasks": "image"}
    module = VisRelDataModule(DataConfig(root=str(tmp_path / "d"), panel_size=16, epoch_batches=2), 4)
    module.setup("fit")
    assert len(list(module.train_dataloader())) == 2


def test_a_garbage_index_is_one_line_in_train_and_eval(capsys, tmp_path):
    data = tmp_path / "d"
    assert cli.main([*LITE, "--out", str(data)]) == 0
    (data / "index.json").write_text('{"tasks": {"x": ')  # cut short
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"data:\n  root: {data}\n  panel_size: 16\nrun:\n  dir: {tmp_path / 'runs'}\n")
    overrides = ["logging.wandb_mode=disabled", f"model.text_cache_dir={tmp_path / 'text'}"]
    fails(capsys, ["train", str(experiment), *overrides, "eval.suites=[]"], "index.json", "unreadable index")
    argv = ["eval", "--config", str(experiment), "--suite", "held_in", "--out", str(tmp_path / "ev"), *overrides]
    fails(capsys, argv, "index.json", "unreadable index")
    json.loads((data / "index.json").read_text() + '{}}, "shards": []}')  # the file itself was left as it was


def test_fewer_eval_episodes_than_asked_warn_once_per_suite_with_the_counts(capsys, caplog, tmp_path):
    from pico_lightning.config import EvalConfig

    assert cli.main([*LITE, "--out", str(tmp_path / "d")]) == 0  # one episode per image suite
    evaluation = EvalConfig(suites=["segmentation", "user_tasks"], episodes_per_suite=8)
    module = VisRelDataModule(DataConfig(root=str(tmp_path / "d"), panel_size=16), 4, evaluation)
    with caplog.at_level("WARNING", logger="pico_lightning.data.eval_items"):
        module.eval_items()
        module.eval_items()  # read once: no second warning
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    for suite, message in zip(("segmentation", "user_tasks"), messages):
        assert f"eval suite '{suite}' has 1 episodes, fewer than eval.episodes_per_suite=8" in message
