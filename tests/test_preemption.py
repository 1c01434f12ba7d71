"""A signalled `pico train` saves the step it reached, stops without a traceback and resumes to the same losses;
resume takes the newest loadable checkpoint, ours or one Lightning's SLURM requeue left."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_overrides

from pico_lightning.run_dir import RunDir
from pico_lightning.signals import LATCH
from pico_lightning.training.checkpoints import resume_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if "train/loss" in row]
    assert len(steps) == len(set(steps)), f"a step logged twice: {steps}"
    return {row["step"]: row["train/loss"] for row in rows if "train/loss" in row}


@pytest.mark.slow  # three `pico train` processes
def test_sigterm_to_the_whole_job_saves_its_step_exits_143_and_resumes_exactly(visrel_tiny, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pico_lightning.cli", "train", "experiments/demo.yaml"]
    command += [*tiny_train_overrides(visrel_tiny, tmp_path, "x"), "data.num_workers=1", "train.max_steps=40"]
    command += ["train.checkpoint_every=100", "eval.suites=[]"]
    reference = subprocess.run([*command, "run.name=whole"], cwd=REPO, env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "runs" / "cut"
    # its own process group: SIGTERM reaches the loader worker too, as SLURM signals every process of a job
    process = subprocess.Popen(
        [*command, "run.name=cut"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and (not (run_dir / "metrics.jsonl").is_file() or len(_losses(run_dir)) < 5):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "stopped by SIGTERM at step " in stderr, stderr[-3000:]
    saved = int(stderr.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert saved < 40 and len(_losses(run_dir)) == saved  # every logged step is in the checkpoint
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == saved
    resumed = subprocess.run([*command, "run.name=cut", "run.resume=auto"], cwd=REPO, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _losses(run_dir) == _losses(tmp_path / "runs" / "whole")


def test_resume_takes_the_newest_loadable_checkpoint_lightnings_included(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for name, age in (("checkpoints/step-000100.ckpt", 30), ("checkpoints/last.ckpt", 20), ("hpc_ckpt_1.ckpt", 10)):
        torch.save({"state_dict": {}}, tmp_path / name)
        os.utime(tmp_path / name, (time.time() - age, time.time() - age))
    assert resume_checkpoint(RunDir(tmp_path), "auto") == tmp_path / "hpc_ckpt_1.ckpt"
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"truncated")
    assert resume_checkpoint(RunDir(tmp_path), "auto") == checkpoints / "last.ckpt"


def test_a_kept_latch_outlives_its_block_for_a_process_about_to_exit():
    before = signal.getsignal(signal.SIGTERM)
    try:
        with LATCH.armed(keep=True):
            pass
        assert signal.getsignal(signal.SIGTERM) == LATCH.note  # a late SIGTERM is noted, not fatal
        with LATCH.armed():
            pass
        assert signal.getsignal(signal.SIGTERM) == LATCH.note  # restored to what it was: the kept latch
    finally:
        signal.signal(signal.SIGTERM, before)
