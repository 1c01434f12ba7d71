"""The experiment schema: one typed dataclass per concern, loaded and validated in one place.

``load_config(paths, overrides)`` merges ``OmegaConf.structured(ExperimentConfig)`` with the YAML files, in order
(later wins), and the command line's ``key=value`` overrides (a launcher's ``defaults`` go right after the first
file), then ``to_object`` runs every ``__post_init__``.
Unknown keys, wrong types, YAML syntax errors and invalid values raise :class:`ConfigError` with one line naming
the key, the file and what was expected.
No torch import here: ``pico --help`` and config errors stay fast.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pico_lightning.config.checks import ConfigError, check, describe
from pico_lightning.config.collector import collector_paused
from pico_lightning.config.data import DataConfig
from pico_lightning.config.evaluation import EvalConfig
from pico_lightning.config.model import LoraConfig, ModelConfig
from pico_lightning.config.run import LoggingConfig, RunConfig
from pico_lightning.config.train import TrainConfig
from pico_lightning.config.yaml_file import read_yaml
from pico_lightning.errors import UserError
from pico_lightning.files import write_text
from pico_lightning.packing import check_grid_side


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        for side in ("rows", "cols"):
            try:
                check_grid_side(self.data.panel_size, getattr(self.data, side), side)
            except UserError as err:
                raise ConfigError(f"data.panel_size: {err}") from None
        quantized = self.model.base_quantization != "none"
        check(  # an 8-bit base is the one-card answer to memory; sharding one is neither needed nor tested
            not (quantized and self.train.strategy == "fsdp"),
            "model.base_quantization",
            "none with train.strategy=fsdp (FSDP shards the bf16 base over the GPUs instead)",
            self.model.base_quantization,
        )


PATH_KEYS = ("model.pretrained_dir", "model.text_cache_dir", "data.root", "data.shards", "eval.perseg_dir", "run.dir")
_REMOTE = re.compile(r"^(pipe:|[a-z][a-z0-9+.-]*://)")


@collector_paused()
def load_config(
    path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    defaults: list[str] | tuple[str, ...] = (),
) -> ExperimentConfig:
    """Defaults <- first YAML file <- ``defaults`` (``key=value`` a launch script takes from the allocation) <- the
    other YAML files, in order (later wins) <- ``key=value`` overrides, validated; errors name the key and the
    file."""
    paths = [] if path is None else [path] if isinstance(path, (str, os.PathLike)) else list(path)
    source = " + ".join(map(str, paths)) or "<defaults>"
    merged = _merge_files(OmegaConf.structured(ExperimentConfig), paths[:1])
    merged = _merge(merged, _parse_overrides(list(defaults)), "--defaults")
    merged = _merge_files(merged, paths[1:])
    merged = _merge(merged, _parse_overrides(list(overrides)), source)
    try:
        return OmegaConf.to_object(merged)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {describe(err)}") from None


def _merge_files(merged: DictConfig, paths: list[str | os.PathLike]) -> DictConfig:
    for file in paths:  # one file at a time, so a bad key or type names the file that holds it
        merged = _merge(merged, _read_layer(file), str(file))
    return merged


def _read_layer(path: str | os.PathLike) -> DictConfig:
    """One experiment file as a DictConfig; ConfigError when missing, unparseable or not a mapping."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: experiment file not found")
    layer = read_yaml(path)
    if not isinstance(layer, DictConfig):  # a list or a scalar: no section to merge
        raise ConfigError(f"{path}: expected a mapping of sections (model:, data:, train:, ...)")
    anchor_paths(layer, Path(path).absolute().parent)
    return layer


def _merge(base: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {describe(err)}") from None


def anchor_paths(layer: DictConfig, base: Path) -> None:
    """Relative paths written in an experiment file start at that file's directory, so a job resolves them the
    same from any working directory; ``key=value`` overrides keep the shell's meaning (the current directory).
    URLs and ``pipe:`` commands in data.shards are left as they are."""
    for key in PATH_KEYS:
        value = OmegaConf.select(layer, key, default=None)
        if isinstance(value, str) and value and not os.path.isabs(value) and not _REMOTE.match(value):
            OmegaConf.update(layer, key, os.path.normpath(base / os.path.expanduser(value)))


def _parse_overrides(overrides: list[str]):
    """The ``key=value`` overrides as one DictConfig; ConfigError naming the first one that is not key=value
    (e.g. ``train.max_steps 5``, split by a space) or whose value does not parse (``eval.suites=[a``)."""
    for i, item in enumerate(overrides):
        key, equals, _ = item.partition("=")
        if not equals or not key:
            joined = f"{item}={overrides[i + 1]}" if i + 1 < len(overrides) and "=" not in overrides[i + 1] else ""
            hint = f" (did you mean {joined}?)" if joined and equals == "" else ""
            raise ConfigError(f"{item!r}: overrides are key=value with no spaces, e.g. train.max_steps=50{hint}")
        try:
            OmegaConf.from_dotlist([item])
        except Exception as err:  # YAML parse errors of the value
            raise ConfigError(f"{key}: cannot parse the value of {item!r} ({str(err).splitlines()[0]})") from None
    return OmegaConf.from_dotlist(overrides)


@collector_paused()
def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what every run directory and checkpoint keeps)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


@collector_paused()
def to_container(cfg: ExperimentConfig) -> dict:
    """The resolved config as plain dicts and lists (safe for ``torch.load(weights_only=True)``)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


@collector_paused()
def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config atomically, its relative paths made absolute (from the current directory): a run's
    config.yaml reads the same from anywhere, though its own relative paths would start at the file."""
    layer = OmegaConf.structured(cfg)
    anchor_paths(layer, Path.cwd())
    write_text(path, OmegaConf.to_yaml(layer))
