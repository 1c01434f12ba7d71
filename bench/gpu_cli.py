"""bench.gpu's ``cli`` section: the shipped command end to end, as a user runs it, on the bench's device.

`pico embed`, then `pico train` of the shipped experiment (flux_fill.yaml on a GPU, demo.yaml with ``--tiny``) for
``STEPS`` steps with a checkpoint every ``EVERY``, a second `pico train` with ``run.resume=auto`` to ``RESUMED``
steps, then `pico export`. Then the same again under ``train.strategy=fsdp`` (FSDP2 at world size 1; it runs on
the CPU too), whose losses are compared step by step with the single-device run's. Seconds per step are timed on
metrics.jsonl's rows as they appear (start-up and the first ``WARMUP`` steps, which compile, excluded), beside the
bench rows' step times.
Run it by name only (``--only cli``): it starts five processes that each build the model.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.gpu_model import BenchSetup, bench_overrides
from pico_lightning.run_dir import RunDir

STEPS, RESUMED, EVERY, WARMUP = 20, 30, 10, 3
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def cli_section(setup: BenchSetup, tmp: Path, data_root: Path) -> dict:
    """Embed once, then train / resume / export per strategy; ``fsdp_max_loss_diff`` compares the two."""
    base = [
        *bench_overrides(setup, tmp, data_root, 1),
        "logging.log_every_n_steps=1",
        f"train.checkpoint_every={EVERY}",
    ]
    start = time.perf_counter()
    pico(["embed", str(setup.experiment), *base])
    result = {"embed_s": time.perf_counter() - start, "single": train_resume_export(setup, tmp, base, "auto")}
    result["fsdp"] = fsdp = train_resume_export(setup, tmp, base, "fsdp")
    pairs = zip(fsdp["losses"], result["single"]["losses"])  # step by step: both logged steps 0.. once each
    result["fsdp_max_loss_diff"] = max(abs(a - b) for a, b in pairs)
    return result


def train_resume_export(setup: BenchSetup, tmp: Path, base: list[str], strategy: str) -> dict:
    """`pico train` to STEPS, `pico train` resumed to RESUMED, `pico export`; the losses of steps 0..RESUMED-1 (each
    logged once), seconds per step of the first run, and what export wrote."""
    name = f"cli-{strategy}"
    run, train = RunDir(tmp / "runs" / name), ["train", str(setup.experiment), *base, f"train.strategy={strategy}"]
    step_s = timed_train([*train, f"run.name={name}", f"train.max_steps={STEPS}"], run)
    timed_train([*train, f"run.name={name}", f"train.max_steps={RESUMED}", "run.resume=auto"], run)
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    steps = [row["step"] for row in rows if "train/loss" in row]
    if sorted(steps) != list(range(RESUMED)):
        raise RuntimeError(f"{name}: steps logged {steps}, expected 0..{RESUMED - 1} once each")
    lora = tmp / f"{name}-lora"
    pico(["export", str(run.path), "--out", str(lora)])
    losses = [row["train/loss"] for row in sorted(rows, key=lambda row: row["step"]) if "train/loss" in row]
    return {
        "step_s": step_s,
        "losses": losses,
        "exported": sorted(p.name for p in lora.iterdir()),
    }


def timed_train(args: list[str], run: RunDir) -> float:
    """Run `pico ARGS`, noting when each step's metrics row appears; the median seconds between rows after WARMUP."""
    metrics, seen = run.metrics, {}
    process = subprocess.Popen(command(args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while process.poll() is None:
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                step = json.loads(line).get("step") if line.endswith("}") else None
                seen.setdefault(step, time.perf_counter())
        time.sleep(0.02)
    stderr = process.stderr.read()
    if process.returncode:
        raise RuntimeError(f"pico {' '.join(args[:2])} exited {process.returncode}: {stderr.strip()[-600:]}")
    times = sorted(t for step, t in seen.items() if isinstance(step, int))[WARMUP:]
    return statistics.median(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else float("nan")


def pico(args: list[str]) -> None:
    done = subprocess.run(command(args), env=ENV, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pico {args[0]} exited {done.returncode}: {done.stderr.strip()[-600:]}")


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pico_lightning.cli", *args]
