"""The W&B run of a run directory: its id, no step logged twice across a resume, the printed links, the LoRA
artifact, project and entity from the environment."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import FixedDataModule, tiny_train_overrides
from support import FixedEpisodes
from wandb_reader import read_run_dir

from pico_lightning.run_dir import RunDir
from pico_lightning.training.wandb_run import LoggedSteps


def test_run_id_is_kept_in_the_run_dir(tmp_path):
    run_dir = tmp_path / "runs" / "a"
    assert RunDir(run_dir).wandb_id(create=False) is None  # other ranks never invent one
    first = RunDir(run_dir).wandb_id(create=True)
    assert (run_dir / "wandb_id").read_text().strip() == first and RunDir(run_dir).wandb_id(create=True) == first
    moved = tmp_path / "elsewhere" / "a"
    shutil.move(run_dir, moved)
    assert RunDir(moved).wandb_id(create=True) == first  # a moved run keeps its W&B run
    shutil.rmtree(moved)
    assert RunDir(moved).wandb_id(create=True) != first  # an rm -rf'd and restarted run gets a fresh one


def test_run_id_of_a_run_trained_before_the_id_file(tmp_path):
    """A run directory from before ``wandb_id`` (its id was a hash of its path) continues the W&B run it holds."""
    (tmp_path / "a" / "wandb" / "offline-run-20261101_100000-0123456789ab").mkdir(parents=True)
    (tmp_path / "a" / "wandb" / "run-20261102_100000-ba9876543210").mkdir()  # the newest, an online start
    assert RunDir(tmp_path / "a").wandb_id(create=True) == "ba9876543210"
    assert (tmp_path / "a" / "wandb_id").read_text().strip() == "ba9876543210"


def test_logged_steps_drop_what_wandb_holds(tmp_path):
    steps = LoggedSteps(tmp_path / "steps.json")
    for step in range(3):
        steps.record(steps.unseen({"train/loss": 1.0, "epoch": 0}, step), step)
    steps.record(steps.unseen({"eval/score": 0.5, "epoch": 0}, 3), 3)  # evaluation after 3 steps ...
    assert steps.unseen({"train/loss": 1.0, "epoch": 0}, 3) == {"train/loss": 1.0, "epoch": 0}  # ... then step 3
    again = LoggedSteps(tmp_path / "steps.json")  # a resumed process reads the marks back
    assert again.unseen({"train/loss": 1.0, "epoch": 0}, 2) == {}  # bookkeeping alone is not a row
    assert again.unseen({"eval/score": 0.4}, 3) == {}
    assert again.unseen({"train/loss": 1.0, "eval/score": 0.4}, 3) == {"train/loss": 1.0}


def test_project_and_entity_from_environment_unless_configured(tiny_cfg, tmp_path, monkeypatch):
    from pico_lightning.training.loggers import build_loggers

    monkeypatch.setenv("WANDB_PROJECT", "env-project")
    monkeypatch.setenv("WANDB_ENTITY", "env-entity")
    cfg = replace(tiny_cfg, logging=replace(tiny_cfg.logging, wandb_mode="offline"))
    init = build_loggers(cfg, RunDir(tmp_path / "a"))[1]._wandb_init
    assert init["project"] == "env-project" and "entity" not in init  # wandb reads WANDB_ENTITY itself
    assert init["job_type"] == "train" and init["resume"] == "allow" and "anonymous" not in init
    named = replace(cfg, logging=replace(cfg.logging, project="p", entity="e"))
    init = build_loggers(named, RunDir(tmp_path / "b"))[1]._wandb_init
    assert (init["project"], init["entity"]) == ("p", "e")
    monkeypatch.delenv("WANDB_PROJECT")
    assert build_loggers(cfg, RunDir(tmp_path / "c"))[1]._wandb_init["project"] == "pico"


class _CrashingEpisodes(FixedEpisodes):
    """The fixed batch stream, raising when batch ``after`` is asked for: a run that dies past its checkpoint."""

    def __init__(self, after: int, **kwargs):
        super().__init__(**kwargs)
        self.after = after

    def __iter__(self):
        for index, batch in enumerate(super().__iter__()):
            if index == self.after:
                raise RuntimeError("simulated crash")
            yield batch


def _train_steps(rows) -> list[int]:
    return [row["trainer/global_step"] for row in rows if "train/loss" in row]


def test_resume_after_a_crash_logs_every_step_once(tiny_cfg, tmp_path, capsys):
    """Crash at step 5 with the last checkpoint at 3, resume: W&B holds steps 0..7 once, in one W&B run; each
    start and end prints the sync command; the data is used as an artifact once, by the first start; the LoRA is an
    artifact with the config as metadata."""
    from pico_lightning.training.train import fit

    data = tmp_path / "my data"
    data.mkdir()
    (data / "index.json").write_text(json.dumps({"tasks": {}, "shards": [], "num_samples": 0}))
    cfg = replace(
        tiny_cfg,
        data=replace(tiny_cfg.data, root=str(data)),  # read by nothing but W&B: the batches are fixed
        logging=replace(tiny_cfg.logging, wandb_mode="offline"),
        train=replace(tiny_cfg.train, max_steps=8),
    )
    crashing = FixedDataModule(panel_size=16)
    crashing.train_dataloader = lambda: torch.utils.data.DataLoader(
        _CrashingEpisodes(after=6, panel_size=16), batch_size=None
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(cfg, crashing)
    run_dir = cfg.run.path()
    before = read_run_dir(run_dir)
    assert max(_train_steps(before.rows)) > 3  # W&B got past the checkpoint the resume starts from
    fit(replace(cfg, run=replace(cfg.run, resume="auto")), FixedDataModule(panel_size=16))

    logged = read_run_dir(run_dir)
    assert sorted(_train_steps(logged.rows)) == list(range(8))  # every step once across both offline files
    wandb_id = (run_dir / "wandb_id").read_text().strip()
    assert [run.run_id for run in logged.runs] == [wandb_id, wandb_id]  # the resume continued the same W&B run
    assert {run.job_type for run in logged.runs} == {"train"}
    assert logged.exit_codes == [1, 0]  # the crashed start shows as failed on the dashboard, the resume as finished

    out = capsys.readouterr().out.splitlines()
    lines = [line[line.index("W&B") :] for line in out if "W&B" in line]  # after a crash: behind the progress bar
    offline_dirs = sorted(str(path) for path in (run_dir / "wandb").glob("offline-run-*"))
    assert lines == [f"W&B offline run; upload it with: wandb sync {path}" for path in offline_dirs for _ in "se"]

    (dataset,) = [artifact for artifact in before.artifacts if artifact.type == "dataset"]  # the first start's
    assert [artifact.type for artifact in logged.artifacts] == ["dataset", "model"]  # not again by the resume
    assert dataset.name == "my_data" and dataset.use_after_commit and json.loads(dataset.metadata)["num_samples"] == 0
    artifact = logged.artifacts[1]
    assert artifact.type == "model" and artifact.name == f"lora-{wandb_id}" and "latest" in artifact.aliases
    metadata = json.loads(artifact.metadata)
    assert metadata["step"] == 8 and metadata["config"]["train"]["max_steps"] == 8 and metadata["eval"] == {}
    assert "pytorch_lora_weights.safetensors" in {entry.path for entry in artifact.manifest.contents}


@pytest.mark.slow  # two processes: ~70 s on a busy 2-core machine
def test_two_process_ddp_has_one_wandb_run(visrel_tiny, tmp_path):
    """Under DDP only global rank zero creates the id and the W&B run, prints its two lines, logs and uploads."""
    overrides = [
        *tiny_train_overrides(visrel_tiny, tmp_path, "ddp"),
        *("train.devices=2", "train.strategy=ddp", "train.max_steps=2", "logging.wandb_mode=offline"),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_MODE", None)
    command = [sys.executable, "-m", "pico_lightning.cli", "train", "experiments/demo.yaml", *overrides]
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp"
    logged = read_run_dir(run_dir)
    assert [run.run_id for run in logged.runs] == [(run_dir / "wandb_id").read_text().strip()]
    assert [line for line in result.stdout.splitlines() if "W&B" in line] == [
        f"W&B offline run; upload it with: wandb sync {path}" for path in (run_dir / "wandb").glob("offline-run-*")
    ] * 2
    assert [row["trainer/global_step"] for row in logged.rows if "eval/score" in row] == [2]
    assert [artifact.type for artifact in logged.artifacts].count("model") == 1
