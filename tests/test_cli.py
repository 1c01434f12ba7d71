"""The commands end to end on small inputs: prep, train + export, eval, infer with seeds."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_train_overrides
from PIL import Image
from safetensors.torch import load_file

from pico_lightning import cli


def test_prep_visrel_lite_small(tmp_path, capsys):
    out = tmp_path / "data"
    assert (
        cli.main(
            [
                "prep",
                "visrel-lite",
                "--out",
                str(out),
                "--samples-per-task",
                "4",
                "--size",
                "32",
                "--suite-episodes",
                "2",
            ]
        )
        == 0
    )
    index = json.loads((out / "index.json").read_text())
    assert len(index["tasks"]) >= 24 and len({t["category"] for t in index["tasks"].values()}) == 4
    assert (out / "suites" / "segmentation.tar").is_file() and (out / "suites" / "user_tasks.tar").is_file()


def test_train_export_eval(visrel_tiny, tmp_path):
    overrides = tiny_train_overrides(visrel_tiny, tmp_path, "cli")
    assert cli.main(["train", "experiments/demo.yaml", *overrides, "eval.every_n_steps=0"]) == 0
    run_dir = tmp_path / "runs" / "cli"
    assert json.loads((run_dir / "summary.json").read_text())["step"] == 4
    assert cli.main(["export", str(run_dir), "--out", str(tmp_path / "exported")]) == 0
    exported = load_file(tmp_path / "exported" / "pytorch_lora_weights.safetensors")
    final = load_file(run_dir / "lora" / "pytorch_lora_weights.safetensors")  # written at the end of fit
    assert exported.keys() == final.keys() and all(torch.equal(exported[k], final[k]) for k in final)
    for card in (tmp_path / "exported" / "README.md", run_dir / "lora" / "README.md"):  # model cards, both final
        assert "## Final evaluation (step 4)" in card.read_text() and "load_lora_weights" in card.read_text()
    assert (
        cli.main(["eval", str(run_dir), "--suite", "segmentation", "--seeds", "2", "--out", str(tmp_path / "ev")]) == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["eval/segmentation/episodes"] == 4 and "eval/segmentation/baseline_miou" in metrics
    assert (tmp_path / "ev" / "gallery.png").is_file()


def test_infer_with_seed_scorer_writes_report(tmp_path):
    files = []
    for name in ("a", "a_out", "b"):
        Image.fromarray(np.random.default_rng(len(name)).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
            tmp_path / f"{name}.png"
        )
        files.append(str(tmp_path / f"{name}.png"))
    out = tmp_path / "out.png"
    (tmp_path / "tiny.yaml").write_text("model:\n  pretrained_dir: ''\n")
    assert (
        cli.main(
            [
                "infer",
                "--config",
                str(tmp_path / "tiny.yaml"),
                "--exemplar",
                *files[:2],
                "--query",
                files[2],
                "--out",
                str(out),
                "--seeds",
                "3",
                "--steps",
                "4",
                "--panel-size",
                "16",
                f"model.text_cache_dir={tmp_path / 'text'}",
            ]
        )
        == 0
    )
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["seeds"] == [0, 1, 2] and len(report["scores"]) == 3
    assert report["model_evaluations"] == 3 * 2 + (4 - 2) and report["chosen_seed"] in (0, 1, 2)
    assert Image.open(out).size == (30, 20)  # B' at the query's own size; the panels were 16 px
    assert report["panel_size"] == 16 and report["output_size"] == [30, 20]
    assert Image.open(out.with_suffix(".grid.png")).size == (32, 32)


def test_print_config_merges_files_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("train:\n  max_steps: 7\nlora:\n  rank: 4\n")
    (tmp_path / "b.yaml").write_text("train:\n  max_steps: 9\n")
    argv = ["train", "a.yaml", "b.yaml", "train.lr=0.5", "--print-config", "run.name=x"]
    assert cli.main(argv) == 0
    from omegaconf import OmegaConf

    printed = OmegaConf.create(capsys.readouterr().out)
    assert (printed.train.max_steps, printed.lora.rank, printed.train.lr, printed.run.name) == (9, 4, 0.5, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b.yaml"]
    assert cli.main(["embed", "a.yaml", "--print-config"]) == 0
    assert "max_steps: 7" in capsys.readouterr().out


def test_version_config_keys_and_log_level(capsys, monkeypatch):
    import logging
    import os

    from pico_lightning import __version__

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0 and __version__ in capsys.readouterr().out
    assert cli.main(["config", "keys", "train"]) == 0
    out = capsys.readouterr().out
    assert "train.max_steps: int = 200\n    Optimizer steps.\n" in out and "lora." not in out
    assert "demo" not in out and "full_finetune" not in out  # the demo base's pretraining recipe is the demo's own
    assert cli.main(["config", "keys", "nosuch"]) == 2
    assert "sections are data, eval" in capsys.readouterr().err
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(logging.getLogger("torchao"), "level", logging.NOTSET)
    assert cli.main(["-v", "config", "keys", "run.name"]) == 0
    assert os.environ["DIFFUSERS_VERBOSITY"] == "info" and logging.getLogger("torchao").level == logging.NOTSET
    monkeypatch.setenv("PICO_LOG_LEVEL", "loud")
    assert cli.main(["config", "keys"]) == 2
    assert "PICO_LOG_LEVEL: expected one of DEBUG, INFO" in capsys.readouterr().err
