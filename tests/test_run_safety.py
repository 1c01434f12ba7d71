"""Nothing lost under careless use: atomic checkpoints, resume past a truncated file, metrics cut back on resume,
one process per run directory, Ctrl-C that says what was saved."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import FixedDataModule, tiny_train_overrides

from pico_lightning.errors import UserError
from pico_lightning.training import checkpoints
from pico_lightning.training.checkpoints import AtomicCheckpointIO, read_checkpoint, resume_checkpoint
from pico_lightning.training.lock import RunLock
from pico_lightning.training.train import fit

REPO = Path(__file__).resolve().parents[1]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    """A full disk in the middle of a save leaves the old checkpoint whole and no temporary file behind."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def full_disk(obj, file):
        Path(file).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_resume_skips_a_truncated_last_checkpoint(tmp_path):
    directory = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {}}, directory / "step-000004.ckpt")
    io.save_checkpoint({"state_dict": {}}, directory / "last.ckpt")
    data = (directory / "last.ckpt").read_bytes()
    (directory / "last.ckpt").write_bytes(data[: len(data) // 3])  # what a copy onto a full disk leaves
    assert resume_checkpoint(directory, "auto") == directory / "step-000004.ckpt"
    with pytest.raises(UserError, match="already has checkpoints"):
        resume_checkpoint(directory, "never")
    (directory / "step-000004.ckpt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="unreadable checkpoint"):
        resume_checkpoint(directory, "auto")


def test_resume_cuts_metrics_back_to_the_checkpoint(tiny_cfg):
    """A run that died after its step-3 checkpoint had logged steps 3 and 4 too: resumed, the history equals an
    uninterrupted run's (no stale rows, no duplicates)."""
    reference = _rows(fit(tiny_cfg, FixedDataModule(panel_size=16)))
    cfg = replace(tiny_cfg, run=replace(tiny_cfg.run, name="died"), train=replace(tiny_cfg.train, max_steps=5))
    run_dir = fit(cfg, FixedDataModule(panel_size=16))
    checkpoints = run_dir / "checkpoints"
    assert read_checkpoint(checkpoints / "last.ckpt")["global_step"] == 5  # the final step is always saved
    shutil.copy(checkpoints / "step-000003.ckpt", checkpoints / "last.ckpt")  # as if it had died before the end
    assert max(r["step"] for r in _rows(run_dir)) == 4  # rows past the checkpoint: the dead run's
    resumed = replace(cfg, run=replace(cfg.run, resume="auto"), train=replace(cfg.train, max_steps=6))
    rows = _rows(fit(resumed, FixedDataModule(panel_size=16)))
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    assert all(a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-6) for a, b in zip(rows, reference))


def test_a_run_directory_takes_one_process_at_a_time(tiny_cfg):
    with RunLock(tiny_cfg.run.path()):
        with pytest.raises(UserError, match=f"run in use by pid {os.getpid()}"):
            fit(tiny_cfg, FixedDataModule(panel_size=16))
    fit(tiny_cfg, FixedDataModule(panel_size=16))  # released: the run goes ahead


def _ctrl_c_default() -> None:
    """The child takes Ctrl-C as a job in a terminal's foreground does. A test run started in the background of a
    script (`make test &`, some CI runners) has SIGINT ignored, an ignored signal stays ignored across exec, and
    Python keeps it so: the child then trained on through the test's Ctrl-C and exited 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_and_says_how_to_continue(visrel_tiny, tmp_path):
    overrides = [*tiny_train_overrides(visrel_tiny, tmp_path, "int"), "train.max_steps=500", "eval.suites=[]"]
    command = [sys.executable, "-m", "pico_lightning.cli", "train", "experiments/demo.yaml", *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process = subprocess.Popen(command, cwd=REPO, env=env, preexec_fn=_ctrl_c_default, **pipes)
    last = tmp_path / "runs" / "int" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not last.is_file():
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    message = stderr.strip().splitlines()[-1]
    tail = stderr[-2000:]  # what the process printed last, in the failure report
    assert message.startswith("pico train: interrupted: stopped at step") and "run.resume=auto" in message, tail
    assert str(last) in message and "Traceback" not in stderr, tail


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MB filesystem (tmpfs): room for one tiny run's first checkpoints, not its next ones."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)  # lazy: a file a failed run left open


def test_a_full_disk_is_one_line_naming_the_directory_and_keeps_the_last_checkpoint(
    visrel_tiny, tmp_path, small_tmpfs, capsys
):
    from pico_lightning import cli

    overrides = tiny_train_overrides(visrel_tiny, tmp_path, "full")
    capsys.readouterr()
    code = cli.main(["train", "experiments/demo.yaml", *overrides, "eval.suites=[]", f"run.dir={small_tmpfs}"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("pico train: error:")]
    checkpoints_dir = small_tmpfs / "full" / "checkpoints"
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert errors == [
        f"pico train: error: {checkpoints_dir}: No space left on device; free some space there or write elsewhere"
    ], err[-3000:]
    assert read_checkpoint(checkpoints_dir / "last.ckpt")["global_step"] == 2  # the step-2 save, whole
    assert sorted(p.name for p in checkpoints_dir.iterdir()) == ["last.ckpt", "step-000002.ckpt"]  # no partial file
