"""Reading one YAML file (experiment or ablation) with syntax errors as one line: file, line, column, cause."""

from __future__ import annotations

import os

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from pico_lightning.config.checks import ConfigError
from pico_lightning.config.collector import collector_paused


@collector_paused()
def read_yaml(path: str | os.PathLike) -> DictConfig | ListConfig:
    """``OmegaConf.load(path)``; a YAML syntax error (a tab, a duplicate key, an unclosed bracket) is a
    ConfigError like ``exp.yaml: line 3, column 1: found character '\\t' that cannot start any token``."""
    try:
        return OmegaConf.load(path)
    except yaml.MarkedYAMLError as err:
        raise ConfigError(f"{path}: {describe(err, path)}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def describe(err: yaml.MarkedYAMLError, path: str | os.PathLike) -> str:
    """Where (1-based line and column) and what: the problem, not yaml's "while scanning ..." context."""
    mark = err.problem_mark or err.context_mark
    problem = (err.problem or err.context or type(err).__name__).strip()
    if mark is None:
        return problem
    if problem == "found character that cannot start any token":  # pyyaml < 6.1 does not name the character
        char = _char_at(path, mark.line, mark.column)
        problem = f"found character {char!r} that cannot start any token"
    if "'\\t'" in problem:
        problem += " (indent with spaces, not tabs)"
    if problem.startswith("found duplicate key "):  # OmegaConf's loader refuses them; name the key plainly
        problem = f"duplicate key {problem.removeprefix('found duplicate key ')!r} (each key may appear once)"
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _char_at(path: str | os.PathLike, line: int, column: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read().splitlines()[line]
        return text[column]
    except (OSError, IndexError):
        return "?"
