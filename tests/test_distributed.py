"""Multi-process runs on CPU (gloo): 2-process DDP through `pico train`, a simulated 2-node torchrun, and a
run killed with SIGKILL then resumed."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_overrides
from support import metrics_rows

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def pico_train(overrides: list[str], **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pico_lightning.cli", "train", "experiments/demo.yaml", *overrides]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.slow  # a `pico train` of two processes
def test_two_process_ddp_trains_and_evaluates(visrel_tiny, tmp_path):
    result = pico_train([*tiny_train_overrides(visrel_tiny, tmp_path, "ddp"), "train.devices=2", "train.strategy=ddp"])
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["ddp"]  # one run directory, written by rank zero only
    run_dir = runs[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 4 and "eval/seen/psnr" in summary["eval"]
    assert (run_dir / "lora" / "pytorch_lora_weights.safetensors").is_file()
    for step in (2, 4):
        evaluated = json.loads((run_dir / "eval" / f"step_{step}" / "metrics.json").read_text())
        assert evaluated["eval/segmentation/episodes"] == 4  # both ranks' shares, synced
        assert (run_dir / "eval" / f"step_{step}" / "gallery.png").is_file()
    eval_rows = [r for r in metrics_rows(run_dir) if "eval/score" in r]
    assert [r["step"] for r in eval_rows] == [2, 4]  # logged once per evaluation, not once per rank


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_simulated_two_node_run_ends_identical(visrel_tiny, tmp_path):
    """Two torchrun launchers (node ranks 0 and 1) meeting on 127.0.0.1: same step count, identical LoRA."""
    port = _free_port()
    overrides = [
        *tiny_train_overrides(visrel_tiny, tmp_path, "nodes"),
        "train.num_nodes=2",
        "train.devices=1",
        "train.strategy=ddp",
        "eval.suites=[]",
    ]
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={node}",
                "--nproc-per-node=1",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                str(REPO / "tests" / "ddp_worker.py"),
                str(tmp_path / "dump"),
                *overrides,
            ],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = [launcher.communicate(timeout=600)[0] for launcher in launchers]
    assert all(launcher.returncode == 0 for launcher in launchers), outputs[0][-3000:] + outputs[1][-3000:]
    dumps = [torch.load(tmp_path / "dump" / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert dumps[0]["step"] == dumps[1]["step"] == 4
    assert dumps[0]["lora"].keys() == dumps[1]["lora"].keys()
    assert all(torch.equal(dumps[0]["lora"][k], dumps[1]["lora"][k]) for k in dumps[0]["lora"])


def _progressed(run_dir: Path, steps: int) -> bool:
    logged = run_dir / "metrics.jsonl"
    saved = (run_dir / "checkpoints" / "last.ckpt").exists()
    return saved and logged.exists() and len(losses_by_step(run_dir)) >= steps


def losses_by_step(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in metrics_rows(run_dir) if "train/loss" in r}  # last write wins


@pytest.mark.slow
def test_sigkill_then_resume_logs_the_same_losses(visrel_tiny, tmp_path):
    overrides = [
        *tiny_train_overrides(visrel_tiny, tmp_path, "x"),
        "train.max_steps=12",
        "train.checkpoint_every=4",
        "eval.suites=[]",
    ]
    reference = pico_train([*overrides, "run.name=uninterrupted"])
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "runs" / "killed"
    command = [
        sys.executable,
        "-m",
        "pico_lightning.cli",
        "train",
        "experiments/demo.yaml",
        *overrides,
        "run.name=killed",
    ]
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not _progressed(run_dir, steps=6):  # past the step-4 checkpoint
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert len(losses_by_step(run_dir)) < 12  # it really died mid-run
    resumed = pico_train([*overrides, "run.name=killed", "run.resume=auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = losses_by_step(tmp_path / "runs" / "uninterrupted"), losses_by_step(run_dir)
    assert sorted(got) == sorted(expected) == list(range(12))
    assert all(got[s] == pytest.approx(expected[s], abs=1e-6) for s in expected)
