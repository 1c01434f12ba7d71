"""Launch a sweep's runs: one after another on this machine, or as a Slurm job array (one array task per run).

Both write the plan first: ``SWEEP_DIR/sweep.json`` (name, base, grid, fixed, runs with their overrides) and
``SWEEP_DIR/runs.txt`` (one shell-quoted override line per run, in array-index order); every sweep file is written
atomically. Every run is started with ``run.resume=auto``, so launching a sweep again continues interrupted runs
and skips finished ones (:meth:`RunDir.is_finished`, asked by the array script too).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from pico_lightning.errors import UserError
from pico_lightning.files import write_text
from pico_lightning.sweeps.spec import RUNS, AblationSpec, Run, SlurmSection, check_runs, expand, load_spec, sweep_run


def launch_sweep(spec_path: str, launcher: str, dry_run: bool, out: str | None, extra: list[str]) -> int:
    """Expand, validate and launch an ablation file; returns the exit code (1 when any local run failed)."""
    spec = load_spec(spec_path)
    sweep_dir = Path(out) if out else Path("runs") / "sweeps" / spec.sweep.name
    runs = expand(spec, sweep_dir, extra)
    check_runs(spec, runs, spec_path)
    print(f"sweep {spec.sweep.name}: {len(runs)} runs of {spec.sweep.base} -> {sweep_dir}")
    if dry_run and preflight_runs(spec, runs, launcher):
        return 1
    if launcher == "local" and dry_run:
        for index, run in enumerate(runs):
            done = " (finished: would be skipped)" if sweep_run(sweep_dir, run.name).is_finished() else ""
            command = shlex.join(train_args(spec.sweep.base, run.overrides))
            print(f"[{index + 1}/{len(runs)}] pico {command}{done}")
        return 0
    write_plan(spec, runs, sweep_dir)
    if launcher == "local":
        return 1 if run_local(spec.sweep.base, runs, sweep_dir) else 0
    todo = [index for index, run in enumerate(runs) if not sweep_run(sweep_dir, run.name).is_finished()]
    if not todo:
        print(f"sweep {spec.sweep.name}: all {len(runs)} runs finished; nothing to submit")
        return 0
    script = write_slurm_script(spec, runs, todo, sweep_dir)
    print(f"{len(todo)} of {len(runs)} runs to train ({len(runs) - len(todo)} finished)")
    if dry_run:
        print(f"wrote {script}; submit it with: sbatch {shlex.quote(str(script))}")
    else:
        submit(script)
    return 0


def preflight_runs(spec: AblationSpec, runs: list[Run], launcher: str) -> int:
    """`pico train --dry-run`'s checks for every run, in the world it will have (the slurm section's nodes and
    ranks for a job array, as the job script passes them); prints each problem on one line, returns their count."""
    from pico_lightning.config import load_config
    from pico_lightning.preflight import preflight

    slurm = spec.slurm
    shape = [f"train.devices={slurm.ranks_per_node()}", f"train.num_nodes={slurm.nodes}"] if launcher == "slurm" else []
    problems = 0
    for run in runs:
        found = preflight(load_config(spec.sweep.base, run.overrides, defaults=shape))
        for problem in found.problems:
            print(f"problem: run {run.name}: {problem}", file=sys.stderr)
        problems += len(found.problems)
    if problems:
        name = spec.sweep.name
        print(f"sweep {name}: {problems} problem(s) in the runs' pre-flight; nothing written", file=sys.stderr)
    return problems


def write_plan(spec: AblationSpec, runs: list[Run], sweep_dir: Path) -> None:
    """Write sweep.json (what `pico report` reads) and runs.txt (what the Slurm array reads)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    sweep = spec.sweep
    plan = {
        "name": sweep.name,
        "base": sweep.base,
        "grid": sweep.grid,
        "fixed": sweep.fixed,
        "runs": [{"name": run.name, "params": run.params, "overrides": run.overrides} for run in runs],
    }
    write_text(sweep_dir / "sweep.json", json.dumps(plan, indent=2) + "\n")
    write_text(sweep_dir / "runs.txt", "".join(shlex.join(run.overrides) + "\n" for run in runs))


def train_args(base: str, overrides: list[str]) -> list[str]:
    """Arguments after `pico` that train one run, resuming it when a checkpoint exists."""
    return ["train", base, *overrides, "run.resume=auto"]


def run_command(argv: list[str]) -> int:
    """Run one command with its output streamed to ours; returns its exit code (tests replace this seam)."""
    return subprocess.call(argv)


def run_local(base: str, runs: list[Run], sweep_dir: Path) -> list[str]:
    """Train the runs one after another, skipping finished ones; returns the names of the failed runs."""
    skipped, failed = [], []
    start, todo = time.monotonic(), [run for run in runs if not sweep_run(sweep_dir, run.name).is_finished()]
    for index, run in enumerate(runs):
        prefix = f"[{index + 1}/{len(runs)}] {run.name}"
        if run not in todo:
            print(f"{prefix}: skipped (already finished)", flush=True)
            skipped.append(run.name)
            continue
        print(f"{prefix}: pico {shlex.join(train_args(base, run.overrides))}", flush=True)
        pico = [sys.executable, "-m", "pico_lightning.cli"]
        code = run_command([*pico, "embed", base, *run.overrides]) or run_command(
            [*pico, *train_args(base, run.overrides)]
        )
        if code != 0 or not sweep_run(sweep_dir, run.name).is_finished():
            why = f"exit code {code}" if code else "no summary.json with status finished"
            print(f"{prefix}: FAILED ({why})", flush=True)
            failed.append(run.name)
        print(progress_line(todo.index(run) + 1, len(todo), len(failed), time.monotonic() - start), file=sys.stderr)
    trained = len(runs) - len(skipped) - len(failed)
    print(
        f"sweep done: {trained} trained, {len(skipped)} skipped (finished), {len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else "")
    )
    return failed


def progress_line(done: int, total: int, failed: int, elapsed: float) -> str:
    """Where a local sweep stands, between runs (each run's own output streams in between, so no live bar)."""
    left = elapsed / done * (total - done)
    return (
        f"sweep: {done}/{total} runs to train done ({failed} failed), {tqdm.format_interval(elapsed)} elapsed, "
        f"~{tqdm.format_interval(left)} left"
    )


JOB_BODY = "# ---- the job"  # the line of slurm.sbatch from which a sweep's array script repeats it


def slurm_header(slurm: SlurmSection, name: str, indices: list[int], sweep_dir: Path) -> list[str]:
    """The #SBATCH lines of a job array with one array task per run to train."""
    throttle = f"%{slurm.throttle}" if slurm.throttle else ""
    options = {
        "job-name": name,
        "array": array_ranges(indices) + throttle,
        "nodes": slurm.nodes,
        "ntasks-per-node": slurm.ranks_per_node(),
        "gpus-per-node": slurm.gpus_per_node or None,
        "cpus-per-task": slurm.cpus_per_task,
        "mem": slurm.mem,
        "time": slurm.time,
        "signal": f"B:USR1@{slurm.signal_lead}",
        "partition": slurm.partition,
        "account": slurm.account,
        "qos": slurm.qos,
        "constraint": slurm.constraint,
        # Absolute paths: Slurm neither expands nor creates them, and relative run paths resolve from --chdir.
        "chdir": Path.cwd(),
        "output": f"{sweep_dir.resolve() / 'logs'}/%A_%a.out",
        "open-mode": "append",
    }
    lines = [f"#SBATCH --{key}={value}" for key, value in options.items() if value]
    return [*lines, "#SBATCH --requeue", *(f"#SBATCH {option}" for option in slurm.extra)]


def array_ranges(indices: list[int]) -> str:
    """Sorted array indices in sbatch's form: ``[0, 1, 2, 5]`` -> ``0-2,5``."""
    groups: list[list[int]] = []
    for index in sorted(indices):
        if groups and index == groups[-1][-1] + 1:
            groups[-1].append(index)
        else:
            groups.append([index])
    return ",".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)


def job_body() -> str:
    """The part of the shipped single-run script (pico_lightning/sweeps/slurm.sbatch) that every job runs: shape
    from the allocation, prompts embedded, `pico train`, signals passed on and requeue."""
    text = (resources.files("pico_lightning.sweeps") / "slurm.sbatch").read_text()
    return text[text.index(JOB_BODY) :]


def write_slurm_script(spec: AblationSpec, runs: list[Run], indices: list[int], sweep_dir: Path) -> Path:
    """Write SWEEP_DIR/sweep.sbatch: array task i trains line i+1 of runs.txt with the shipped job script."""
    slurm, root = spec.slurm, sweep_dir.resolve()
    (sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    body = [
        "#!/bin/bash",
        f"# Sweep {spec.sweep.name}: {len(runs)} runs of `pico train`, one array task each (by pico sweep).",
        f"# Submit with: sbatch {shlex.quote(str(sweep_dir / 'sweep.sbatch'))}",
        "# `pico sweep` again after failures submits the unfinished runs; interrupted ones resume from last.ckpt.",
        *slurm_header(slurm, spec.sweep.name, indices, sweep_dir),
        "set -euo pipefail",
        *slurm.setup,
        f"NAMES=({' '.join(run.name for run in runs)})",
        f"RUN_DIR={shlex.quote(str(root / RUNS))}/${{NAMES[$SLURM_ARRAY_TASK_ID]}}",
        # the interpreter that wrote the sweep, which has pico_lightning (a bare `python` may be another or none)
        f'if {shlex.quote(sys.executable)} -m pico_lightning.run_dir is-finished "$RUN_DIR"; then',
        '    echo "$RUN_DIR: finished"; exit 0',
        "fi",
        f'LINE=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(root / "runs.txt"))})',
        'eval "OVERRIDES=($LINE)"  # runs.txt lines are shell-quoted by pico sweep',
        f'set -- {shlex.quote(spec.sweep.base)} "${{OVERRIDES[@]}}"',
        "",
        job_body(),
    ]
    script = sweep_dir / "sweep.sbatch"
    write_text(script, "\n".join(body), mode=0o755)
    return script


def submit(script: Path) -> None:
    """Submit a job script with sbatch, printing its answer (the job id)."""
    if shutil.which("sbatch") is None:
        raise UserError("sbatch not found: use --dry-run to only write the script")
    result = subprocess.run(["sbatch", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise UserError(f"sbatch {script}: {lines[-1] if lines else f'exit code {result.returncode}'}")
    print(result.stdout.strip())
