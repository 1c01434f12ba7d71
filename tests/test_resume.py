"""Exact resume inside a data epoch: a run stopped at any step continues with the uninterrupted run's loss trace,
at any worker count (in-process, and through `pico train` killed with SIGKILL)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_train_overrides
from support import metrics_rows

from pico_lightning.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _overrides(visrel_tiny, tmp_path, workers: int) -> list[str]:
    """8 steps over data epochs of 4 batches, a checkpoint every 3 steps: step 3 (and 6) is mid-epoch."""
    return [
        *tiny_train_overrides(visrel_tiny, tmp_path, "x"),
        f"data.num_workers={workers}",
        "data.augment=true",
        "train.max_steps=8",
        "train.checkpoint_every=3",
        "eval.suites=[]",
    ]


def _losses(run_dir: Path) -> dict[int, float]:
    rows = metrics_rows(run_dir)
    return {row["step"]: row["train/loss"] for row in rows if "train/loss" in row}  # last write wins


class Stopped(BaseException):
    """Ends a fit abruptly, like a kill: no checkpoint, no cleanup Lightning would do for an ordinary error."""


@pytest.mark.parametrize("workers", [2])  # 0 workers: test_datamodule and the slow SIGKILL test
def test_a_run_stopped_mid_epoch_resumes_to_the_same_losses(visrel_tiny, tmp_path, monkeypatch, workers):
    from pico_lightning.training.module import PicoModule
    from pico_lightning.training.train import fit

    overrides = _overrides(visrel_tiny, tmp_path, workers)
    expected = _losses(fit(load_config("experiments/demo.yaml", [*overrides, "run.name=whole"])))
    step = PicoModule.training_step

    def stop_at_step_5(module, batch, batch_idx):
        if module.global_step == 5:  # after the step-3 checkpoint, before the step-6 one
            raise Stopped
        return step(module, batch, batch_idx)

    monkeypatch.setattr(PicoModule, "training_step", stop_at_step_5)
    with pytest.raises(Stopped):
        fit(load_config("experiments/demo.yaml", [*overrides, "run.name=cut"]))
    monkeypatch.undo()
    run_dir = fit(load_config("experiments/demo.yaml", [*overrides, "run.name=cut", "run.resume=auto"]))
    got = _losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(8))
    assert all(got[s] == pytest.approx(expected[s], abs=1e-6) for s in expected), (got, expected)


@pytest.mark.slow
def test_pico_train_killed_mid_epoch_resumes_to_the_same_losses(visrel_tiny, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pico_lightning.cli", "train", "experiments/demo.yaml"]
    command += _overrides(visrel_tiny, tmp_path, workers=0)
    reference = subprocess.run([*command, "run.name=whole"], cwd=REPO, env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "runs" / "cut"
    process = subprocess.Popen([*command, "run.name=cut"], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "checkpoints" / "last.ckpt").exists():
        time.sleep(0.01)
    while time.time() < deadline and len(_losses(run_dir)) < 5:  # past the step-3 checkpoint, before step 6
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert len(_losses(run_dir)) < 8  # it really died mid-run
    resumed = subprocess.run([*command, "run.name=cut", "run.resume=auto"], cwd=REPO, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = _losses(tmp_path / "runs" / "whole"), _losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(8))
    assert all(got[s] == pytest.approx(expected[s], abs=1e-6) for s in expected)
