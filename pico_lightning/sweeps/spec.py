"""The ablation file: a typed schema, its validation and its expansion into runs of `pico train`.

An ablation file is YAML (``base`` is relative to the ablation file; the sweep directory to the current one)::

    sweep:
      name: task_diversity            # sweep name: SWEEP_DIR default runs/sweeps/<name>, and the W&B group
      base: ../demo.yaml              # experiment every run starts from
      grid:                           # cartesian product of config overrides (first key varies slowest)
        data.num_tasks: [4, 8, 12, 15]
        data.shots_per_task: [2, 4, 8]
        train.seed: [0, 1]
      fixed:                          # applied to every run, e.g. the equal step budget
        train.max_steps: 300
    slurm:                            # only read by --launcher slurm; every key is optional (SlurmSection)
      nodes: 1                        # nodes per run
      gpus_per_node: 0                # 0: a CPU job of ntasks_per_node ranks; else one rank per GPU
      cpus_per_task: 2                # per rank: data.num_workers + 1
      time: "01:00:00"                # per attempt (quote it: YAML reads 01:00:00 as a number); requeued at the limit
      throttle: 2                     # at most 2 runs at once
      setup: ["source ~/venvs/pico/bin/activate"]

Every run gets ``run.dir=SWEEP_DIR/runs run.name=<run name> logging.group=<sweep name>``, then ``fixed``,
its grid point and the command line's extra overrides. Run names join each grid key's last segment with its
value, e.g. ``num_tasks4-shots_per_task2-seed0``; they are stable for a given file and unique in a sweep.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pico_lightning.config.checks import describe
from pico_lightning.config.collector import collector_paused
from pico_lightning.config.yaml_file import read_yaml
from pico_lightning.errors import UserError
from pico_lightning.run_dir import RunDir

RESERVED_KEYS = ("run.dir", "run.name", "logging.group")  # the sweep sets these per run
RUNS = "runs"  # every run's run.dir: SWEEP_DIR/runs
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}")
_SLURM_MEM = re.compile(r"\d+[KMGT]?")
_SLURM_MINIMA = {
    "nodes": 1,
    "gpus_per_node": 0,
    "ntasks_per_node": 1,
    "cpus_per_task": 1,
    "throttle": 0,
    "signal_lead": 0,
}


@dataclass
class SweepSection:
    name: str = "???"
    """Sweep name: letters, digits, '_', '-', '.'; the default SWEEP_DIR and the W&B group."""
    base: str = "???"
    """Experiment YAML every run starts from."""
    grid: dict[str, list[Any]] = field(default_factory=dict)
    """Config key -> values; runs are the cartesian product, in key order (first key slowest)."""
    fixed: dict[str, Any] = field(default_factory=dict)
    """Config key -> value applied to every run."""


@dataclass
class SlurmSection:
    nodes: int = 1
    """Nodes per run."""
    gpus_per_node: int = 0
    """GPUs per node, one rank per GPU; 0 = a CPU job (ranks from ntasks_per_node)."""
    ntasks_per_node: int = 1
    """Ranks per node of a CPU job (a GPU job has one per GPU)."""
    cpus_per_task: int = 1
    """CPUs per rank: data.num_workers + 1 feeds the loader."""
    mem: str = ""
    """Memory per node, e.g. 64G; empty = cluster default."""
    time: str = "04:00:00"
    """Wall-clock limit per run attempt (Slurm format, e.g. 30, 04:00:00, 1-00:00:00); a run that needs longer is
    requeued at the limit and continues."""
    signal_lead: int = 120
    """Seconds before the time limit that SLURM warns a run (SIGUSR1) to save its step and requeue."""
    partition: str = ""
    """Slurm partition; empty = cluster default."""
    account: str = ""
    """Slurm account; empty = user default."""
    qos: str = ""
    """Quality of service; empty = default."""
    constraint: str = ""
    """Node features, e.g. h100; empty = any node."""
    throttle: int = 0
    """At most this many runs at once (the job array's %K); 0 = no limit."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before training, e.g. "module load cuda/12.4", "source ~/venvs/pico/bin/activate"."""
    extra: list[str] = field(default_factory=list)
    """More #SBATCH options as written on the sbatch line, e.g. "--exclusive", "--mail-type=END"."""

    def ranks_per_node(self) -> int:
        return self.gpus_per_node or self.ntasks_per_node


@dataclass
class AblationSpec:
    sweep: SweepSection = field(default_factory=SweepSection)
    slurm: SlurmSection = field(default_factory=SlurmSection)


@dataclass
class Run:
    """One expanded run: its name, its grid point (key -> value) and its overrides for `pico train`."""

    name: str
    params: dict[str, Any]
    overrides: list[str]


@collector_paused()
def load_spec(path: str | Path) -> AblationSpec:
    """Read and validate an ablation file; every error is one line naming the file and the key."""
    if not Path(path).is_file():
        raise UserError(f"{path}: ablation file not found")
    layer = read_yaml(path)  # syntax errors name the line and column
    try:
        spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AblationSpec), layer))
    except OmegaConfBaseException as err:
        raise UserError(f"{path}: {describe(err)}") from None
    _check_spec(spec, path)
    spec.sweep.base = str(Path(path).parent / spec.sweep.base)  # an absolute base stays as it is
    return spec


def _check_spec(spec: AblationSpec, path: str | Path) -> None:
    """Cross-field checks the types cannot express."""
    sweep, slurm = spec.sweep, spec.slurm
    problems = []
    if not sweep.name or _UNSAFE.search(sweep.name):
        problems.append(f"sweep.name: expected letters, digits, '_', '-' or '.', got {sweep.name!r}")
    if not sweep.grid:
        problems.append("sweep.grid: expected at least one key with a list of values (an empty grid sweeps nothing)")
    for key, values in sweep.grid.items():
        if not values:
            problems.append(f"sweep.grid.{key}: expected a non-empty list of values")
        if len(set(map(_format, values))) != len(values):
            problems.append(f"sweep.grid.{key}: expected distinct values, got {values!r}")
    for key in [*sweep.grid, *sweep.fixed]:
        if key in RESERVED_KEYS:
            problems.append(f"sweep: {key}: set by the sweep itself, remove it")
    for key in set(sweep.grid) & set(sweep.fixed):
        problems.append(f"sweep.fixed.{key}: also swept in sweep.grid")
    problems += slurm_problems(slurm)
    if problems:
        raise UserError(f"{path}: " + "; ".join(problems))


def slurm_problems(slurm: SlurmSection) -> list[str]:
    """What is wrong in a ``slurm:`` section, one phrase per key."""
    problems = [
        f"slurm.{key}: expected an integer >= {low}, got {getattr(slurm, key)}"
        for key, low in _SLURM_MINIMA.items()
        if getattr(slurm, key) < low
    ]
    if not _SLURM_TIME.fullmatch(slurm.time):
        problems.append(f"slurm.time: expected minutes, [D-]HH:MM:SS or D-HH, got {slurm.time!r}")
    if slurm.mem and not _SLURM_MEM.fullmatch(slurm.mem):
        problems.append(f"slurm.mem: expected a size like 64G or 16000M, got {slurm.mem!r}")
    for key in ("partition", "account", "qos", "constraint"):
        if any(c.isspace() for c in getattr(slurm, key)):
            problems.append(f"slurm.{key}: expected no spaces, got {getattr(slurm, key)!r}")
    problems += [f"slurm.setup: expected one shell line each, got {line!r}" for line in slurm.setup if "\n" in line]
    problems += [
        f"slurm.extra: expected an sbatch option like --exclusive, got {line!r}"
        for line in slurm.extra
        if not line.startswith("--") or "\n" in line
    ]
    return problems


@collector_paused()
def _format(value: Any) -> str:
    """A value as ``key=value`` text that OmegaConf's dotlist parser reads back unchanged."""
    if value is None:
        return "null"
    plain = str(value).lower() if isinstance(value, bool) else str(value)
    for text in (plain, json.dumps(value)):
        try:
            if OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"] == value:
                return text
        except Exception:  # text the YAML parser rejects: try the quoted form
            continue
    raise UserError(f"value {value!r}: cannot be written as a key=value override")


def run_name(params: dict[str, Any]) -> str:
    """Readable, path-safe name of a grid point, e.g. ``num_tasks4-shots_per_task2-seed0``."""
    parts = [f"{key.rsplit('.', 1)[-1]}{_format(value)}" for key, value in params.items()]
    return _UNSAFE.sub("_", "-".join(parts)).strip("_") or "base"


def check_extra(extra: list[str], spec: AblationSpec) -> None:
    """Command-line overrides must be ``key=value`` and must not touch swept or reserved keys."""
    for item in extra:
        key = item.split("=", 1)[0]
        if "=" not in item or not key:
            raise UserError(f"override {item!r}: expected key=value, e.g. train.max_steps=50")
        if key in spec.sweep.grid or key in RESERVED_KEYS:
            raise UserError(f"override {item!r}: {key} is set by the sweep (grid or run identity)")


def expand(spec: AblationSpec, sweep_dir: str | Path, extra: list[str] | tuple[str, ...] = ()) -> list[Run]:
    """The sweep's runs in stable order (itertools.product over the grid in key order)."""
    check_extra(list(extra), spec)
    sweep = spec.sweep
    fixed = [f"{key}={_format(value)}" for key, value in sweep.fixed.items()]
    runs_dir = _format(str(Path(sweep_dir) / RUNS))
    runs = []
    for values in itertools.product(*sweep.grid.values()):
        params = dict(zip(sweep.grid, values, strict=True))
        name = run_name(params)
        identity = [f"run.dir={runs_dir}", f"run.name={name}", f"logging.group={sweep.name}"]
        point = [f"{key}={_format(value)}" for key, value in params.items()]
        runs.append(Run(name, params, [*identity, *fixed, *point, *extra]))
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        clash = next(name for name in names if names.count(name) > 1)
        raise UserError(f"sweep {sweep.name}: two grid points share the run name {clash!r}; rename a value")
    return runs


def sweep_run(sweep_dir: str | Path, name: str) -> RunDir:
    """The run directory of the sweep's run ``name``: SWEEP_DIR/runs/<name>, as :func:`expand` places it."""
    return RunDir(Path(sweep_dir) / RUNS / name)


def check_runs(spec: AblationSpec, runs: list[Run], spec_path: str | Path) -> None:
    """Load every run's config through the experiment schema, so a bad key or value fails before launching."""
    from pico_lightning.config import ConfigError, load_config

    if not Path(spec.sweep.base).is_file():
        raise UserError(
            f"{spec_path}: sweep.base: experiment file not found: {spec.sweep.base} "
            "(a relative base starts at the ablation file's directory)"
        )
    for run in runs:
        try:
            load_config(spec.sweep.base, run.overrides)
        except ConfigError as err:
            raise UserError(f"{spec_path}: run {run.name}: {err}") from None
