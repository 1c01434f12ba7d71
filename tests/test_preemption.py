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
from support import metrics_rows

from pico_lightning.config import load_config
from pico_lightning.run_dir import RunDir
from pico_lightning.signals import LATCH
from pico_lightning.training.checkpoints import resume_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _losses(run_dir: Path) -> dict[int, float]:
    rows = metrics_rows(run_dir)
    steps = [row["step"] for row in rows if "train/loss" in row]
    assert len(steps) == len(set(steps)), f"a step logged twice: {steps}"
    return {row["step"]: row["train/loss"] for row in rows if "train/loss" in row}


def train_command(visrel_tiny, tmp_path, *extra: str) -> tuple[dict, list[str]]:
    """(environment, command) of a tiny `pico train` subprocess: W&B off, output unbuffered, one thread."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pico_lightning.cli", "train", "experiments/demo.yaml"]
    return env, [*command, *tiny_train_overrides(visrel_tiny, tmp_path, "x"), *extra]


@pytest.mark.slow  # three `pico train` processes
def test_sigterm_to_the_whole_job_saves_its_step_exits_143_and_resumes_exactly(visrel_tiny, tmp_path):
    env, command = train_command(visrel_tiny, tmp_path, "data.num_workers=1", "train.max_steps=40")
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


def _evaluations(run_dir: Path) -> list[tuple[int, float]]:
    return [(row["step"], row["eval/score"]) for row in metrics_rows(run_dir) if "eval/score" in row]


def test_a_signal_before_or_inside_an_evaluation_stops_it_and_the_resumed_run_evaluates_that_step_once(
    visrel_tiny, tmp_path, monkeypatch
):
    """Evaluations at steps 2, 4 (the end of a data epoch) and 6 (the last step). SIGUSR1 during the fourth
    training step: saved at step 4, whose evaluation is due, at its first episode; during step 6's evaluation:
    stopped at its next episode. Nothing of a stopped evaluation is logged; resumed, every step and evaluation is
    logged once, with the losses and scores of an uninterrupted run."""
    from pico_lightning.training.module import PicoModule
    from pico_lightning.training.preemption import Preempted
    from pico_lightning.training.train import fit

    overrides = [*tiny_train_overrides(visrel_tiny, tmp_path, "x"), "train.max_steps=6", "train.checkpoint_every=100"]
    whole = fit(load_config("experiments/demo.yaml", [*overrides, "run.name=whole"]))
    assert [step for step, _ in _evaluations(whole)] == [2, 4, 6]
    training_step, validation_step = PicoModule.training_step, PicoModule.validation_step
    for stage, at, saved in (("train", 3, 4), ("eval", 6, 6)):

        def signalled_training(module, batch, batch_idx, at=at, stage=stage):
            if stage == "train" and module.global_step == at:  # the step that makes it 4
                LATCH.note(signal.SIGUSR1)
            return training_step(module, batch, batch_idx)

        def signalled_evaluation(module, item, batch_idx, at=at, stage=stage):
            if stage == "eval" and module.global_step == at and batch_idx == 1:
                LATCH.note(signal.SIGUSR1)
            return validation_step(module, item, batch_idx)

        monkeypatch.setattr(PicoModule, "training_step", signalled_training)
        monkeypatch.setattr(PicoModule, "validation_step", signalled_evaluation)
        name = f"run.name=cut_{stage}"
        with pytest.raises(Preempted) as stop:
            fit(load_config("experiments/demo.yaml", [*overrides, name]))
        monkeypatch.undo()
        run_dir = tmp_path / "runs" / f"cut_{stage}"
        assert (stop.value.signum, stop.value.step) == (signal.SIGUSR1, saved)
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == saved
        assert [step for step, _ in _evaluations(run_dir)] == [2, 4, 6][: saved // 2 - 1]  # none of the stopped one
        assert not (run_dir / "eval" / f"step_{saved}").exists() and not (run_dir / "summary.json").exists()
        fit(load_config("experiments/demo.yaml", [*overrides, name, "run.resume=auto"]))
        assert _losses(run_dir) == pytest.approx(_losses(whole), abs=1e-6)
        assert _evaluations(run_dir) == pytest.approx(_evaluations(whole), abs=1e-6)  # each step once, same scores
        assert json.loads((run_dir / "summary.json").read_text())["step"] == 6
        assert (run_dir / "lora" / "pytorch_lora_weights.safetensors").is_file()


def _fake_scontrol(bin_dir: Path, failures: int) -> Path:
    """An ``scontrol`` that refuses ``failures`` times, then succeeds; it appends each call to calls.txt."""
    bin_dir.mkdir()
    calls = bin_dir / "calls.txt"
    script = bin_dir / "scontrol"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        f'if [ "$(wc -l < {calls})" -le {failures} ]; then\n'
        '  echo "slurm_requeue error: Socket timed out" >&2; exit 1\n'
        "fi\n"
    )
    script.chmod(0o755)
    return calls


def test_requeue_retries_a_refused_scontrol(tmp_path, monkeypatch, caplog):
    from pico_lightning.training.preemption import requeue_slurm_job

    calls = _fake_scontrol(tmp_path / "bin", failures=2)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert requeue_slurm_job(waits_s=(0, 0, 0)) == "77"
    assert calls.read_text().splitlines() == ["requeue 77"] * 3
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2 and all("Socket timed out" in message for message in failures)
    calls.unlink()
    _fake_scontrol(tmp_path / "bin2", failures=9)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin2'}:{os.environ['PATH']}")
    assert requeue_slurm_job(waits_s=(0, 0, 0)) is None  # refused 4 times: given up


def test_without_scontrol_the_stop_line_is_the_command_that_continues_the_run(tmp_path, monkeypatch):
    from argparse import Namespace

    from pico_lightning.commands.train import _going_on
    from pico_lightning.training.preemption import Preempted

    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol (a container)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    args = Namespace(experiment=["experiments/demo.yaml", "run.name=my run"], overrides=["run.resume=never"])
    line = _going_on(Preempted(signal.SIGUSR1, 12, tmp_path / "last.ckpt"), args)
    assert line == (
        "the job could not requeue itself; continue with: "
        "pico train experiments/demo.yaml 'run.name=my run' run.resume=auto"
    )
    monkeypatch.delenv("SLURM_JOB_ID")
    line = _going_on(Preempted(signal.SIGTERM, 12, tmp_path / "last.ckpt"), args)
    assert line == "continue with: pico train experiments/demo.yaml 'run.name=my run' run.resume=auto"


def test_a_kept_latch_ignores_stop_signals_through_interpreter_shutdown():
    """Python resets its signal handlers to the default action before tearing its modules down: without the atexit
    ignore, a warning in that window (a run that just finished) killed the process, a FAILED job with 138."""
    child = (
        "import sys, torch\n"
        "from pico_lightning.signals import LATCH\n"
        "held = [torch.ones(256, 256) for _ in range(2000)]  # memory to free at exit, as after a fit\n"
        "with LATCH.armed(keep=True):\n"
        "    print('done', flush=True)\n"
    )
    for delay in (0.05, 0.1):
        process = subprocess.Popen([sys.executable, "-c", child], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "done\n"
        time.sleep(delay)
        process.send_signal(signal.SIGUSR1)
        assert process.wait(timeout=60) == 0


# Many denoising steps and seeds: 6 episodes of ~1 s each on 2 loaded cores. With 24 steps the whole evaluation took
# 0.75 s on CI, shorter than the test's 1 s wait, and the signal landed in step 3.
LONG_EVALUATION = ["eval.num_steps=200", "eval.num_seeds=4"]


def _into_the_step_2_evaluation(run_dir: Path) -> None:
    """Return once step 2 is logged and a moment has passed: its evaluation, seconds long, is then running (a signal
    that lands before it starts stops at step 2 as well; only one that lands after it ends would not)."""
    deadline = time.time() + 300
    while time.time() < deadline and (not (run_dir / "metrics.jsonl").is_file() or len(_losses(run_dir)) < 2):
        time.sleep(0.05)
    time.sleep(0.3)


@pytest.mark.slow
def test_scancel_usr1_during_an_evaluation_stops_it_requeues_and_the_resumed_run_evaluates_once(visrel_tiny, tmp_path):
    """`scancel --signal=USR1` to a fake SLURM job's `pico train` as its step-2 evaluation runs (long: many
    denoising steps and seeds): it exits 138 at step 2, before the evaluation's end, and requeues; the resumed run
    logs every step and evaluation once, as an uninterrupted run does."""
    calls = _fake_scontrol(tmp_path / "bin", failures=0)
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pico_lightning.cli", "train", "experiments/demo.yaml"]
    command += [*tiny_train_overrides(visrel_tiny, tmp_path, "x"), *LONG_EVALUATION]
    reference = subprocess.run([*command, "run.name=whole"], cwd=REPO, env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "runs" / "cut"
    job = {**env, "SLURM_JOB_ID": "77", "PATH": f"{tmp_path / 'bin'}:{env['PATH']}"}
    process = subprocess.Popen([*command, "run.name=cut"], cwd=REPO, env=job, stderr=subprocess.PIPE, text=True)
    _into_the_step_2_evaluation(run_dir)
    process.send_signal(signal.SIGUSR1)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 138, stderr[-3000:]
    assert "stopped by SIGUSR1 at step 2;" in stderr and "requeued SLURM job 77" in stderr, stderr[-3000:]
    assert calls.read_text() == "requeue 77\n" and "Traceback" not in stderr
    assert not (run_dir / "eval" / "step_2").exists() and not _evaluations(run_dir)  # stopped before its end
    resumed = subprocess.run([*command, "run.name=cut", "run.resume=auto"], cwd=REPO, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _losses(run_dir) == pytest.approx(_losses(tmp_path / "runs" / "whole"), abs=1e-6)
    assert _evaluations(run_dir) == pytest.approx(_evaluations(tmp_path / "runs" / "whole"), abs=1e-6)


@pytest.mark.slow
def test_usr1_to_one_ddp_rank_inside_an_evaluation_stops_both_at_the_same_episode(visrel_tiny, tmp_path):
    """Two DDP ranks, SIGUSR1 to rank 1 alone as the step-2 evaluation runs: the ranks agree before each episode, so
    both save step 2 and exit 138 (none is left waiting in a collective); resumed, as an uninterrupted run."""
    env, command = train_command(visrel_tiny, tmp_path, "train.devices=2", "train.strategy=ddp")
    command += LONG_EVALUATION
    reference = subprocess.run([*command, "run.name=whole"], cwd=REPO, env=env, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "runs" / "cut"
    process = subprocess.Popen([*command, "run.name=cut"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    _into_the_step_2_evaluation(run_dir)
    (rank_1,) = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()  # Lightning's launch
    os.kill(int(rank_1), signal.SIGUSR1)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 138 and "stopped by SIGUSR1 at step 2;" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr and not _evaluations(run_dir), stderr[-3000:]
    resumed = subprocess.run([*command, "run.name=cut", "run.resume=auto"], cwd=REPO, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _losses(run_dir) == pytest.approx(_losses(tmp_path / "runs" / "whole"), abs=1e-6)
    assert _evaluations(run_dir) == pytest.approx(_evaluations(tmp_path / "runs" / "whole"), abs=1e-6)


def test_a_sigterm_before_the_first_step_saves_that_step_and_is_no_ctrl_c(tiny_cfg):
    """Between the model's build and the first step Lightning's own SIGTERM handler runs beside the latch; its flag
    used to end the fit after step 1 with a SystemExit of Lightning's, reported as a Ctrl-C (130), not 143."""
    from conftest import FixedDataModule

    from pico_lightning.training.preemption import Preempted
    from pico_lightning.training.train import fit

    data = FixedDataModule(panel_size=16)
    loader = data.train_dataloader

    def signalled_loader():
        os.kill(os.getpid(), signal.SIGTERM)  # as the fit sets up its data, after Lightning composed its handler
        return loader()

    data.train_dataloader = signalled_loader
    with pytest.raises((Preempted, KeyboardInterrupt)) as stop:  # a KeyboardInterrupt was the bug
        fit(tiny_cfg, data)
    assert isinstance(stop.value, Preempted) and (stop.value.signum, stop.value.step) == (signal.SIGTERM, 1)
