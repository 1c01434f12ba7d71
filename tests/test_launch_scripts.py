"""The launch scripts (slurm.sbatch, torchrun.sh) run with fake srun / torchrun / scontrol: the user's files and
overrides beat the allocation's shape, which beats the experiment file; srun gets the CPUs per task; a training
step that ends with the warning's code is requeued once. Also the `--defaults` layer and the run-directory check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pico_lightning.config import load_config
from pico_lightning.errors import UserError
from pico_lightning.training.shared_dir import MARKER, SharedRunDir

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "experiments" / "launch" / "slurm.sbatch"
TORCHRUN = REPO / "experiments" / "launch" / "torchrun.sh"
SPLIT = "=== config"


def fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
    os.chmod(bin_dir / name, 0o755)


def experiment(tmp_path: Path) -> Path:
    """flux_fill.yaml's shape: 4 devices, a global batch of 4."""
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  devices: 4\n  batch_size: 4\n  strategy: ddp\nrun:\n  name: exp\n")
    return path


def configs(stdout: str) -> list[dict]:
    """The configs the fake `pico` printed, one per call, in order."""
    return [yaml.safe_load(part) for part in stdout.split(SPLIT + "\n")[1:]]


def run_script(tmp_path: Path, script: Path, args: list, env: dict, pico: str = "") -> subprocess.CompletedProcess:
    """``script args`` with fakes on PATH; by default `pico` prints the config it resolves instead of running."""
    bin_dir = tmp_path / "bin"
    fake(bin_dir, "pico", pico or f'echo "{SPLIT}"; exec {sys.executable} -m pico_lightning.cli "$@" --print-config')
    fake(bin_dir, "python", f'echo "{SPLIT}"; exec {sys.executable} "$@" --print-config')
    fake(
        bin_dir,
        "srun",
        'echo "srun $* cpus=${SRUN_CPUS_PER_TASK:-}" >> "$LOG"\nwhile [[ $1 == --* ]]; do shift; done\n"$@"',
    )
    fake(bin_dir, "torchrun", 'echo "torchrun $*" >> "$LOG"\nwhile [[ $1 != -m ]]; do shift; done\nexec python "$@"')
    scontrol = (
        'echo "scontrol $*" >> "$LOG"\n[[ $STATE == FAIL ]] && exit 1\n[[ $1 == show ]] && echo "JobState=$STATE"; true'
    )
    fake(bin_dir, "scontrol", scontrol)
    full = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "LOG": str(tmp_path / "log"),
        "STATE": "RUNNING",
        **env,
    }
    return subprocess.run(["bash", str(script), *map(str, args)], env=full, capture_output=True, text=True)


def log(tmp_path: Path) -> list[str]:
    return (tmp_path / "log").read_text().splitlines()


def test_slurm_two_nodes_of_one_rank_embed_and_train_with_the_job_shape(tmp_path):
    # The case: flux_fill.yaml's train.devices=4 on 2 nodes x 1 rank with a batch of 2 stopped pico embed.
    allocation = {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_CPUS_PER_TASK": "5"}
    job = run_script(tmp_path, SBATCH, [experiment(tmp_path), "train.batch_size=2"], allocation)
    assert job.returncode == 0, job.stderr
    embed, train = configs(job.stdout)
    assert embed == train
    assert train["train"]["devices"] == 1 and train["train"]["num_nodes"] == 2 and train["train"]["batch_size"] == 2
    assert train["train"]["accelerator"] == "cpu" and train["train"]["strategy"] == "ddp"  # the experiment's
    assert train["run"]["resume"] == "auto"
    calls = log(tmp_path)
    assert calls[0].startswith("srun --ntasks-per-node=1 --ntasks=2 pico embed --defaults")
    assert calls[1].startswith("srun pico train --defaults") and all(c.endswith("cpus=5") for c in calls)


def test_slurm_users_overlay_and_overrides_beat_the_allocation(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("train:\n  devices: 2\n  strategy: fsdp\n")
    allocation = {"SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS_PER_NODE": "4", "SLURM_GPUS_ON_NODE": "4"}
    args = [experiment(tmp_path), overlay, "run.resume=never", "train.accelerator=cpu"]
    job = run_script(tmp_path, SBATCH, args, allocation)
    assert job.returncode == 0, job.stderr
    train = configs(job.stdout)[1]["train"]
    assert (train["devices"], train["strategy"], train["accelerator"]) == (2, "fsdp", "cpu")
    assert configs(job.stdout)[1]["run"]["resume"] == "never"
    assert "SRUN_CPUS_PER_TASK" not in job.stdout and log(tmp_path)[0].endswith("cpus=")


@pytest.mark.parametrize("state, requeued", [("RUNNING", True), ("PENDING", False), ("COMPLETING", False)])
def test_slurm_requeues_after_the_warnings_code_unless_requeued(tmp_path, state, requeued):
    pico = "[[ $1 == train ]] && exit 138; exit 0"
    env = {"SLURM_JOB_ID": "7", "STATE": state}
    job = run_script(tmp_path, SBATCH, [experiment(tmp_path)], env, pico=pico)
    assert job.returncode == 0, job.stderr
    assert ("scontrol requeue 7" in log(tmp_path)) == requeued
    assert ("requeueing job 7 after the save" in job.stdout) == requeued


def test_slurm_failed_requeue_says_how_to_continue(tmp_path):
    pico = "[[ $1 == train ]] && exit 138; exit 0"
    job = run_script(tmp_path, SBATCH, [experiment(tmp_path)], {"SLURM_JOB_ID": "7", "STATE": "FAIL"}, pico=pico)
    assert job.returncode == 138
    assert "could not requeue job 7: submit the same sbatch line again" in job.stderr


def test_slurm_other_exit_codes_are_not_requeued(tmp_path):
    job = run_script(tmp_path, SBATCH, [experiment(tmp_path)], {"SLURM_JOB_ID": "7"}, pico="[[ $1 == embed ]]")
    assert job.returncode == 1
    assert not any("requeue" in line for line in log(tmp_path))


def test_torchrun_users_arguments_come_last_and_win(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("train:\n  strategy: fsdp\n")
    job = run_script(tmp_path, TORCHRUN, [experiment(tmp_path), overlay, "train.batch_size=2"], {"GPUS": "2"})
    assert job.returncode == 0, job.stderr
    embed, train = configs(job.stdout)
    assert embed == train
    assert (train["train"]["devices"], train["train"]["num_nodes"]) == (2, 1)
    assert (train["train"]["strategy"], train["train"]["batch_size"], train["run"]["resume"]) == ("fsdp", 2, "auto")
    assert log(tmp_path) == [
        f"torchrun --nnodes 1 --nproc-per-node 2 --standalone -m pico_lightning.cli train "
        f"--defaults train.devices=2 --defaults train.num_nodes=1 --defaults run.resume=auto "
        f"{experiment(tmp_path)} {overlay} train.batch_size=2"
    ]


def test_defaults_go_over_the_first_file_and_under_the_rest(tmp_path):
    base, overlay = experiment(tmp_path), tmp_path / "overlay.yaml"
    overlay.write_text("train:\n  num_nodes: 2\n")
    defaults = ["train.devices=2", "train.num_nodes=3", "train.max_steps=7"]
    cfg = load_config([base, overlay], ["train.max_steps=9"], defaults=defaults)
    assert (cfg.train.devices, cfg.train.num_nodes, cfg.train.max_steps) == (2, 2, 9)
    assert load_config([base], defaults=["train.devices=1"]).train.devices == 1


def rank(global_rank: int, token: str = "t0") -> SimpleNamespace:
    """A stand-in trainer of rank ``global_rank`` in a world of 2, its collectives answered locally."""
    strategy = SimpleNamespace(
        broadcast=lambda obj: token, barrier=lambda name=None: None, reduce_boolean_decision=lambda seen, all: seen
    )
    return SimpleNamespace(world_size=2, global_rank=global_rank, is_global_zero=global_rank == 0, strategy=strategy)


def test_run_dir_seen_by_every_rank_passes_and_leaves_no_marker(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    SharedRunDir(run_dir, wait_s=0).setup(rank(0), None, "fit")
    assert run_dir.is_dir() and not (run_dir / MARKER).exists()


def test_rank_that_does_not_see_the_run_dir_stops_with_one_line(tmp_path):
    run_dir = tmp_path / "node_local"
    run_dir.mkdir()
    (run_dir / MARKER).write_text("an earlier run's token")
    with pytest.raises(
        UserError,
        match=r"node_local: rank 1 on .+ does not see the run directory rank 0 made; run.dir "
        r"must be on a filesystem every node sees",
    ):
        SharedRunDir(run_dir, wait_s=0).setup(rank(1), None, "fit")


def test_rank_that_sees_it_stops_too_when_another_does_not(tmp_path):
    trainer = rank(0)
    trainer.strategy.reduce_boolean_decision = lambda seen, all: False
    with pytest.raises(UserError, match="another node does not see the run directory rank 0 made"):
        SharedRunDir(tmp_path / "r", wait_s=0).setup(trainer, None, "fit")
