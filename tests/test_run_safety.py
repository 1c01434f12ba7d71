"""Nothing lost under careless use: atomic checkpoints, resume past a truncated file, metrics cut back on resume,
one process per run directory (with flock or without), Ctrl-C that says what was saved."""

import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import FixedDataModule, tiny_train_overrides
from support import metrics_rows

from pico_lightning.errors import UserError
from pico_lightning.run_dir import RunDir
from pico_lightning.training import checkpoints
from pico_lightning.training.checkpoints import AtomicCheckpointIO, read_checkpoint, resume_checkpoint
from pico_lightning.training.train import fit

REPO = Path(__file__).resolve().parents[1]


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
    assert resume_checkpoint(RunDir(tmp_path), "auto") == directory / "step-000004.ckpt"
    with pytest.raises(UserError, match="already has checkpoints"):
        resume_checkpoint(RunDir(tmp_path), "never")
    (directory / "step-000004.ckpt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="unreadable checkpoint"):
        resume_checkpoint(RunDir(tmp_path), "auto")


def test_resume_cuts_metrics_back_to_the_checkpoint(tiny_cfg):
    """A run that died after its step-3 checkpoint had logged steps 3 and 4 too: resumed, the history equals an
    uninterrupted run's (no stale rows, no duplicates)."""
    reference = metrics_rows(fit(tiny_cfg, FixedDataModule(panel_size=16)))
    cfg = replace(tiny_cfg, run=replace(tiny_cfg.run, name="died"), train=replace(tiny_cfg.train, max_steps=5))
    run_dir = fit(cfg, FixedDataModule(panel_size=16))
    checkpoints = run_dir / "checkpoints"
    assert read_checkpoint(checkpoints / "last.ckpt")["global_step"] == 5  # the final step is always saved
    shutil.copy(checkpoints / "step-000003.ckpt", checkpoints / "last.ckpt")  # as if it had died before the end
    assert max(r["step"] for r in metrics_rows(run_dir)) == 4  # rows past the checkpoint: the dead run's
    resumed = replace(cfg, run=replace(cfg.run, resume="auto"), train=replace(cfg.train, max_steps=6))
    rows = metrics_rows(fit(resumed, FixedDataModule(panel_size=16)))
    assert [r["step"] for r in rows] == [r["step"] for r in reference]
    assert all(a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-6) for a, b in zip(rows, reference))


def no_flock(handle, operation):
    """``fcntl.flock`` on a filesystem without it (Lustre mounted without -o flock says ENOSYS, NFS ENOLCK)."""
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


def lock_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "pico_lightning.run_dir"]


def in_use_by(pid: int, host: str) -> str:
    return re.escape(f"run in use by pid {pid} on {host}; wait for it to finish or choose another run.name")


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "no-flock"])
def test_a_run_directory_takes_one_process_at_a_time(tiny_cfg, monkeypatch, caplog, flock):
    """Also where the filesystem has no flock (some Lustre and NFS mounts): the run starts with one warning line."""
    if not flock:
        monkeypatch.setattr(fcntl, "flock", no_flock)
    with RunDir(tiny_cfg.run.path()).lock():
        with pytest.raises(UserError, match=in_use_by(os.getpid(), socket.gethostname())):
            fit(tiny_cfg, FixedDataModule(panel_size=16))
    caplog.clear()
    fit(tiny_cfg, FixedDataModule(panel_size=16))  # released: the run goes ahead
    warned = lock_lines(caplog)
    assert len(warned) == (0 if flock else 1) and all("no flock on this filesystem" in line for line in warned)


def test_without_flock_the_lock_is_the_file_and_says_who_holds_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(fcntl, "flock", no_flock)
    run = RunDir(tmp_path / "run")
    with run.lock():
        (line,) = lock_lines(caplog)
        assert line == (
            f"{run.lock_file}: no flock on this filesystem (No locks available); the lock is the file itself, "
            "removed when the run ends"
        )
        assert run.lock_file.read_text() == f"{socket.gethostname()} {os.getpid()}"
        with pytest.raises(UserError, match=in_use_by(os.getpid(), socket.gethostname())) as refused:
            run.lock().__enter__()
        assert str(refused.value).endswith(f"(if that process is gone, remove {run.lock_file})")
    assert not run.lock_file.exists()  # released: the file was the lock


def test_without_flock_a_dead_process_lock_on_this_host_is_taken_over(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(fcntl, "flock", no_flock)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.lock_file.write_text(f"{socket.gethostname()} {dead.pid}")
    with run.lock():
        assert run.lock_file.read_text() == f"{socket.gethostname()} {os.getpid()}"
    host = socket.gethostname()
    taken = f"{run.lock_file}: taking over the lock of pid {dead.pid} on {host}, which is no longer running"
    assert lock_lines(caplog)[1:] == [taken]  # after the no-flock line


@pytest.mark.parametrize("holder", ["other-host", "live"])
def test_without_flock_a_live_or_foreign_lock_is_refused(tmp_path, monkeypatch, holder):
    """A holder on another host cannot be checked, so it is never taken over."""
    monkeypatch.setattr(fcntl, "flock", no_flock)
    host, pid = ("gpu-node-7", 12345) if holder == "other-host" else (socket.gethostname(), os.getppid())
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.lock_file.write_text(f"{host} {pid}")
    with pytest.raises(UserError, match=in_use_by(pid, host)):
        run.lock().__enter__()
    assert run.lock_file.read_text() == f"{host} {pid}"  # left to its holder


@pytest.mark.slow  # a `pico train` process
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
