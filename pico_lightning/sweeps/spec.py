"""The ablation file: a typed schema, its validation and its expansion into runs of `pico train`.

An ablation file is YAML (paths are relative to the current directory, normally the repo root)::

    sweep:
      name: task_diversity            # sweep name: SWEEP_DIR default runs/sweeps/<name>, and the W&B group
      base: experiments/demo.yaml     # experiment every run starts from
      grid:                           # cartesian product of config overrides (first key varies slowest)
        data.num_tasks: [4, 8, 12, 15]
        data.shots_per_task: [2, 4, 8]
        train.seed: [0, 1]
      fixed:                          # applied to every run, e.g. the equal step budget
        train.max_steps: 300
    slurm:                            # only read by --launcher slurm
      nodes: 1                        # nodes per run
      gpus_per_node: 8                # GPUs (= tasks) per node
      time: "04:00:00"                # wall-clock limit per run (quote it: YAML reads 04:00:00 as a number)
      partition: ""                   # empty = the cluster default
      account: ""                     # empty = the user default

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

from pico_lightning.config.yaml_file import read_yaml
from pico_lightning.errors import UserError

RESERVED_KEYS = ("run.dir", "run.name", "logging.group")  # the sweep sets these per run
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


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
    gpus_per_node: int = 8
    """GPUs per node; one task (rank) per GPU."""
    time: str = "04:00:00"
    """Wall-clock limit per run (Slurm format, e.g. 1-00:00:00)."""
    partition: str = ""
    """Slurm partition; empty = cluster default."""
    account: str = ""
    """Slurm account; empty = user default."""


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


def load_spec(path: str | Path) -> AblationSpec:
    """Read and validate an ablation file; every error is one line naming the file and the key."""
    if not Path(path).is_file():
        raise UserError(f"{path}: ablation file not found")
    layer = read_yaml(path)  # syntax errors name the line and column
    try:
        spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AblationSpec), layer))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise UserError(f"{path}: {key}: {str(getattr(err, 'msg', err)).splitlines()[0]}") from None
    _check_spec(spec, path)
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
    if slurm.nodes < 1 or slurm.gpus_per_node < 1:
        got = (slurm.nodes, slurm.gpus_per_node)
        problems.append(f"slurm: expected nodes and gpus_per_node >= 1, got {got}")
    if problems:
        raise UserError(f"{path}: " + "; ".join(problems))


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
    runs_dir = _format(str(Path(sweep_dir) / "runs"))
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


def check_runs(spec: AblationSpec, runs: list[Run], spec_path: str | Path) -> None:
    """Load every run's config through the experiment schema, so a bad key or value fails before launching."""
    from pico_lightning.config import ConfigError, load_config

    if not Path(spec.sweep.base).is_file():
        raise UserError(
            f"{spec_path}: sweep.base: experiment file not found: {spec.sweep.base} "
            "(relative paths start at the current directory)"
        )
    for run in runs:
        try:
            load_config(spec.sweep.base, run.overrides)
        except ConfigError as err:
            raise UserError(f"{spec_path}: run {run.name}: {err}") from None
