"""Bad input for every command: one clear line naming the thing, exit 2, no traceback, nothing written lost."""

import numpy as np
import pytest
import torch
from PIL import Image

from pico_lightning import cli


@pytest.fixture
def pictures(tmp_path):
    paths = []
    for name in ("a", "a_out", "b"):
        Image.fromarray(np.full((16, 16, 3), 100, dtype=np.uint8)).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    return paths


def fails(capsys, argv, *needles):
    """The command exits 2 with exactly one stderr line containing every needle, and no traceback."""
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def infer_args(pictures, tmp_path, *extra):
    return [
        "infer",
        "--exemplar",
        *pictures[:2],
        "--query",
        pictures[2],
        "--out",
        str(tmp_path / "o.png"),
        "--steps",
        "2",
        f"model.text_cache_dir={tmp_path / 'text'}",
        *extra,
    ]


def test_infer_missing_and_corrupt_images(capsys, tmp_path, pictures):
    fails(capsys, infer_args([pictures[0], str(tmp_path / "nope.png"), pictures[2]], tmp_path), "nope.png", "not found")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    fails(capsys, infer_args([str(tmp_path / "cut.png"), *pictures[1:]], tmp_path), "cut.png", "not a readable image")


def test_infer_odd_modes_are_accepted(capsys, tmp_path, pictures):
    Image.new("P", (20, 12)).save(tmp_path / "p.png")
    Image.fromarray(np.full((9, 7), 40000, dtype=np.uint16)).save(tmp_path / "i16.png")
    Image.new("LA", (5, 5)).save(tmp_path / "la.png")
    files = [str(tmp_path / n) for n in ("p.png", "i16.png", "la.png")]
    assert cli.main(infer_args(files, tmp_path)) == 0
    assert Image.open(tmp_path / "o.png").size == (32, 32)


def test_infer_size_that_does_not_pack(capsys, tmp_path, pictures):
    fails(capsys, infer_args(pictures, tmp_path, "--panel-size", "20"), "nearest valid panel sizes: [16, 24]")


def test_infer_incomplete_model_dir(capsys, tmp_path, pictures, tiny_flux_dir):
    partial = tmp_path / "flux"
    partial.mkdir()
    (partial / "transformer").symlink_to(tiny_flux_dir / "transformer")
    fails(capsys, infer_args(pictures, tmp_path) + ["--model-dir", str(partial)], "incomplete", "vae", "tokenizer_2")
    fails(capsys, infer_args(pictures, tmp_path) + ["--model-dir", str(tmp_path / "none")], "model.pretrained_dir")


def test_infer_lora_for_another_model(capsys, tmp_path, pictures):
    from pico_lightning.config import LoraConfig, ModelConfig
    from pico_lightning.model.backbone import build_parts
    from pico_lightning.model.lora import add_lora, export_lora

    other = build_parts(ModelConfig(num_attention_heads=4, axes_dims_rope=[4, 6, 6]))
    add_lora(other.transformer, LoraConfig(rank=2))
    export_lora(other.transformer, tmp_path / "lora")
    fails(capsys, infer_args(pictures, tmp_path, "--lora", str(tmp_path / "lora")), "does not fit")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.lrr=1", "train.lrr"),
        ("train.max_steps=-2", "train.max_steps"),
        ("train.max_steps=ten", "max_steps"),
        ("data.panel_size=20", "nearest valid panel sizes"),
        ("train.devices=3", "train.batch_size"),
    ],
)
def test_train_bad_config(capsys, tmp_path, override, needle):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"train:\n  batch_size: 4\nrun:\n  dir: {tmp_path / 'runs'}\n")
    fails(capsys, ["train", str(experiment), override], needle, "exp.yaml")
    assert not (tmp_path / "runs").exists()


def test_train_missing_experiment_and_data(capsys, tmp_path):
    fails(capsys, ["train", str(tmp_path / "missing.yaml")], "missing.yaml", "not found")
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"data:\n  root: {tmp_path / 'nodata'}\nrun:\n  dir: {tmp_path / 'runs'}\n")
    fails(capsys, ["train", str(experiment), "eval.suites=[]", "logging.wandb_mode=disabled"], "data.root", "nodata")


def test_train_corrupt_shard_dir(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "visrel-000000.tar").write_bytes(b"garbage")
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"data:\n  root: {data}\nrun:\n  dir: {tmp_path / 'runs'}\n")
    fails(capsys, ["train", str(experiment), "logging.wandb_mode=disabled"], "without a readable sample")


def test_export_and_eval_missing_or_corrupt_run(capsys, tmp_path):
    fails(capsys, ["export", str(tmp_path / "norun"), "--out", str(tmp_path / "x")], "norun")
    fails(capsys, ["eval", str(tmp_path / "norun")], "not a run directory")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("train:\n  max_steps: 3\n")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04truncated")
    fails(capsys, ["export", str(run), "--out", str(tmp_path / "x")], "last.ckpt", "unreadable checkpoint")
    fails(capsys, ["eval", str(run), "--suite", "nosuch"], "eval.suites")


def test_sweep_and_report_bad_input(capsys, tmp_path):
    fails(capsys, ["sweep", str(tmp_path / "none.yaml"), "--dry-run"], "none.yaml")
    fails(capsys, ["report", str(tmp_path / "nosweep")], "nosweep")


def test_prep_bad_input(capsys, tmp_path):
    fails(capsys, ["prep", "visrel-lite", "--out", str(tmp_path / "d"), "--samples-per-task", "1"], "samples-per-task")
    fails(capsys, ["prep", "folders", str(tmp_path / "raw"), "--out", str(tmp_path / "d")], "raw")


def test_interrupted_checkpoint_write_keeps_the_previous_one(tiny_cfg, monkeypatch):
    """A crash in the middle of writing a checkpoint leaves the previous last.ckpt whole and loadable."""
    from conftest import FixedDataModule
    from fsspec.implementations.local import LocalFileOpener

    from pico_lightning.run.checkpoints import read_checkpoint
    from pico_lightning.run.train import build_trainer, fit

    run_dir = fit(tiny_cfg, FixedDataModule(panel_size=16))
    last = run_dir / "checkpoints" / "last.ckpt"
    before = read_checkpoint(last)["state_dict"]

    def crash(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(LocalFileOpener, "write", crash)
    trainer = build_trainer(tiny_cfg, run_dir, [])
    with pytest.raises(OSError, match="simulated"):
        trainer.strategy.checkpoint_io.save_checkpoint({"state_dict": {}}, last)
    monkeypatch.undo()
    after = read_checkpoint(last)["state_dict"]
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
