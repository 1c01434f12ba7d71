"""Cluster life on a real two-node SLURM (`make test-cluster` brings it up): the shipped job script and `pico sweep
--launcher slurm` as shipped, an eval-heavy run cut by its time limit at least 3 times and a run signalled by hand
inside an evaluation, each finishing unattended with the loss trace and the evaluations of an uninterrupted run, and
a throttled sweep with one requeue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import metrics_rows

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "launch" / "slurm.sbatch"
DEMO = REPO / "experiments" / "demo.yaml"
FINAL = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}

if shutil.which("sbatch") is None:
    pytest.skip("no SLURM here: run `make test-cluster`", allow_module_level=True)


def tiny_run(data: Path, out: Path, name: str, steps: int, wandb: str = "disabled") -> list[str]:
    """`pico train experiments/demo.yaml` overrides for a tiny CPU run (in-process model, 16 px panels)."""
    return [
        f"data.root={data}",
        "model.pretrained_dir=''",
        "data.panel_size=16",
        "data.num_workers=1",
        "data.epoch_batches=20",
        "train.batch_size=4",
        f"train.max_steps={steps}",
        "train.checkpoint_every=1000",
        "eval.every_n_steps=0",
        "eval.suites=[held_in]",
        "eval.episodes_per_suite=2",
        "eval.num_steps=2",
        "eval.num_seeds=2",
        "eval.scorer_steps=1",
        f"logging.wandb_mode={wandb}",
        "logging.log_every_n_steps=1",
        f"model.text_cache_dir={out / 'text'}",
        f"run.dir={out / 'runs'}",
        f"run.name={name}",
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from pico_lightning.prep.suites import build_suites, write_suites
    from pico_lightning.prep.visrel_lite import build_visrel_lite

    root = tmp_path_factory.mktemp("cluster_data")
    build_visrel_lite(root, seed=0, samples_per_task=6, size=32, progress=False)
    write_suites(root, build_suites(seed=0, episodes_per_suite=4, size=32))
    return root


def sbatch(*args: str, cwd: Path) -> str:
    """Submit with sbatch from ``cwd``; the job id."""
    done = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip().split(";")[0]


def job_states(job: str) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} of a job or of every task of an array, finished ones included."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    states = {}
    for line in out.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        task = fields.get("ArrayTaskId")
        name = f"{fields['ArrayJobId']}_{task}" if task and "-" not in task and "," not in task else fields["JobId"]
        states[name] = (fields["JobState"], fields.get("Reason", ""))
    return states


def wait_for(job: str, timeout: float, until=None) -> dict[str, tuple[str, str]]:
    """Poll until every task of ``job`` is final (or ``until()`` holds); a requeued task waiting for its BeginTime
    (SLURM's delay before a requeued job may start again) is released at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = job_states(job)
        for name, (state, reason) in states.items():
            if state == "PENDING" and reason == "BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={name}", "StartTime=now"], capture_output=True)
        if until is not None and until():
            return states
        if states and all(state in FINAL for state, _ in states.values()):
            return states
        time.sleep(2)
    subprocess.run(["scancel", job])
    raise AssertionError(f"job {job} not done in {timeout:.0f} s: {job_states(job)}")


def signal_task(job: str) -> None:
    """``scancel --signal=USR1`` a running job's steps, as a user does; SLURM may ask to try again a moment later."""
    for _ in range(10):
        if subprocess.run(["scancel", "--signal=USR1", job], capture_output=True).returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"scancel --signal=USR1 {job} kept failing: {job_states(job)}")


def losses(run_dir: Path) -> dict[int, float]:
    rows = metrics_rows(run_dir)
    steps = [row["step"] for row in rows if "train/loss" in row]
    assert len(steps) == len(set(steps)), f"a step logged twice: {sorted(steps)}"
    return {row["step"]: row["train/loss"] for row in rows if "train/loss" in row}


def clean_log(log: Path) -> str:
    text = log.read_bytes().decode(errors="replace")  # srun interleaves stdout and stderr chunks at any byte
    assert "Traceback" not in text and "sync_dist" not in text, text[-3000:]
    return text


WORK_SECONDS = 260  # training + evaluations of the reference: a 3-minute limit with a 90 s warning leaves at most
# ~70 s of work an attempt (start-up takes the rest), so the time-limited run is cut at least 3 times
EVAL_EVERY = 5  # steps between evaluations
HEAVY_EVAL = [  # each in-loop evaluation takes a few times the 5 training steps before it, as at FLUX scale, and
    # still a fraction of an attempt: one longer than an attempt's work would be stopped and redone for ever
    f"eval.every_n_steps={EVAL_EVERY}",
    "eval.exemplar_swap=false",
    "eval.episodes_per_suite=4",
    "eval.num_steps=8",
    "eval.num_seeds=2",
    "eval.scorer_steps=1",
]
# PICO_CLUSTER_REPEAT=N: the time-limited run N times in a row against one reference, sized once from the machine's
# speed: keep its load steady, or a machine that frees up finishes a repetition before its time limit cuts it
REPEAT = int(os.environ.get("PICO_CLUSTER_REPEAT", "1"))


@dataclass(frozen=True)
class Reference:
    """An uninterrupted 1-rank run (no SLURM) with heavy in-loop evaluations: its steps, losses and evaluated steps."""

    steps: int
    losses: dict[int, float]
    evaluated: list[int]


def evaluated_steps(run_dir: Path) -> list[int]:
    rows = metrics_rows(run_dir)
    return [row["step"] for row in rows if "eval/score" in row]


def train_here(data: Path, out: Path, name: str, steps: int) -> float:
    """`pico embed` + `pico train` of a tiny eval-heavy run outside SLURM; its seconds per step, evaluations
    included, timed on metrics.jsonl's rows (start-up excluded)."""
    overrides = tiny_run(data, out, name, steps) + HEAVY_EVAL
    pico = [sys.executable, "-m", "pico_lightning.cli"]
    subprocess.run([*pico, "embed", str(DEMO), *overrides], check=True, capture_output=True, cwd=out)
    metrics, seen = out / "runs" / name / "metrics.jsonl", []
    with subprocess.Popen([*pico, "train", str(DEMO), *overrides], cwd=out, stdout=subprocess.DEVNULL) as process:
        try:
            while process.poll() is None:
                rows = metrics_rows(metrics.parent) if metrics.is_file() else []
                seen.append((time.monotonic(), max((row["step"] for row in rows if "train/loss" in row), default=-1)))
                time.sleep(0.2)
        finally:
            process.kill()  # a failed poll leaves no training behind (a no-op once it has exited)
    assert process.returncode == 0
    (first, step0), (last, step1) = next(p for p in seen if p[1] >= 0), max(seen, key=lambda p: p[1])
    return max(last - first, 1e-3) / max(step1 - step0, 1)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Reference:
    """The eval-heavy run, sized from this machine's speed (a short run first) to take about WORK_SECONDS."""
    out = tmp_path_factory.mktemp("reference")
    per_step = train_here(data, out, "calibration", 8 * EVAL_EVERY)
    steps = max(4, round(WORK_SECONDS / per_step / EVAL_EVERY)) * EVAL_EVERY
    train_here(data, out, "reference", steps)
    run_dir = out / "runs" / "reference"
    return Reference(steps, losses(run_dir), evaluated_steps(run_dir))


def test_the_shipped_script_runs_two_cpu_ranks_as_shipped(data, tmp_path):
    job = sbatch(
        "--ntasks-per-node=2", "--time=10", str(SCRIPT), str(DEMO), *tiny_run(data, tmp_path, "two", 6), cwd=tmp_path
    )
    states = wait_for(job, 600)
    assert states[job][0] == "COMPLETED", states
    log = clean_log(tmp_path / f"pico-train-{job}.out")
    assert "on 1 node(s) x 2 cpu rank(s)" in log
    assert log.count("run directory:") == 1 and log.count("finished:") == 1  # every line once, not once per rank
    summary = json.loads((tmp_path / "runs" / "two" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 6


@pytest.mark.parametrize("attempt", range(REPEAT))
def test_an_eval_heavy_run_cut_by_its_time_limit_finishes_unattended_with_the_same_losses(
    data, reference, tmp_path, attempt
):
    job = sbatch(
        "--ntasks-per-node=1",
        "--time=3",
        "--signal=B:USR1@90",
        str(SCRIPT),
        str(DEMO),
        *tiny_run(data, tmp_path, "limited", reference.steps, wandb="offline"),
        *HEAVY_EVAL,
        cwd=tmp_path,
    )
    states = wait_for(job, 2400)
    assert states[job][0] == "COMPLETED", states
    log = clean_log(tmp_path / f"pico-train-{job}.out")
    assert "(restart 3)" in log and "stopped by SIGUSR1" in log, log[-3000:]  # cut at least 3 times
    run_dir = tmp_path / "runs" / "limited"
    assert losses(run_dir) == reference.losses
    assert evaluated_steps(run_dir) == reference.evaluated  # every evaluation logged once, none lost
    assert not list(run_dir.glob("hpc_ckpt_*"))


def test_a_signal_during_an_evaluation_stops_it_saves_requeues_and_redoes_it(data, reference, tmp_path):
    """`scancel --signal=USR1` while the first in-loop evaluation runs: the run saves at that step and stops without
    finishing the evaluation (nothing of it is logged); the requeued job redoes it, and every step and evaluation
    is logged once, with the losses of an uninterrupted run."""
    run_dir = tmp_path / "runs" / "signalled"
    args = [str(DEMO), *tiny_run(data, tmp_path, "signalled", reference.steps), *HEAVY_EVAL]
    job = sbatch("--ntasks-per-node=1", "--time=30", str(SCRIPT), *args, cwd=tmp_path)
    deadline = time.monotonic() + 900
    while EVAL_EVERY - 1 not in losses_so_far(run_dir):  # the step before the first evaluation is logged ...
        assert time.monotonic() < deadline, job_states(job)
        time.sleep(0.05)
    signal_task(job)  # ... so that evaluation has just begun
    log = tmp_path / f"pico-train-{job}.out"
    wait_for(job, 300, until=lambda: "stopped by SIGUSR1" in log.read_text())
    saved = int(log.read_text().split("stopped by SIGUSR1 at step ")[1].split(";")[0])
    assert saved == EVAL_EVERY and evaluated_steps(run_dir) == []  # stopped inside it, not at its end
    states = wait_for(job, 1500)
    assert states[job][0] == "COMPLETED", states
    assert losses(run_dir) == reference.losses and evaluated_steps(run_dir) == reference.evaluated
    assert "(restart 1)" in clean_log(log)


def losses_so_far(run_dir: Path) -> dict[int, float]:
    return losses(run_dir) if (run_dir / "metrics.jsonl").is_file() else {}


def test_a_throttled_sweep_survives_a_requeue_and_is_not_submitted_twice(data, tmp_path):
    fixed = "\n".join(
        f"    {key}: {value}"
        for key, value in (item.split("=", 1) for item in tiny_run(data, tmp_path, "x", 150))
        if not key.startswith("run.")
    )
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        f"sweep:\n  name: cluster\n  base: {DEMO}\n  grid:\n    train.seed: [0, 1, 2, 3]\n  fixed:\n{fixed}\n"
        'slurm:\n  gpus_per_node: 0\n  ntasks_per_node: 1\n  cpus_per_task: 1\n  time: "10"\n  throttle: 2\n'
    )
    out = tmp_path / "sweep"

    def pico(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "pico_lightning.cli", *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)

    submitted = pico("sweep", str(spec), "--launcher", "slurm", "--out", str(out))
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().splitlines()[-1].split()[-1]
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "ArrayTaskThrottle=2" in shown  # SLURM enforces the sweep's throttle
    first = out / "runs" / "seed0" / "metrics.jsonl"
    wait_for(job, 600, until=lambda: first.is_file() and len(first.read_text().splitlines()) >= 5)
    signal_task(f"{job}_0")
    states = wait_for(job, 1200)
    assert all(state == "COMPLETED" for state, _ in states.values()) and len(states) == 4, states
    logs = {path.name: path.read_text() for path in (out / "logs").glob("*.out")}
    assert any("(restart 1)" in text for text in logs.values()), logs
    again = pico("sweep", str(spec), "--launcher", "slurm", "--out", str(out))
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout + again.stderr
    report = pico("report", str(out))
    assert report.returncode == 0 and "seed" in report.stdout, report.stdout + report.stderr
    assert os.path.isfile(out / "runs" / "seed3" / "summary.json")
