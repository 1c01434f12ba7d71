"""The experiment schema: one typed dataclass per concern, loaded and validated in one place.

``load_config(path, overrides)`` merges ``OmegaConf.structured(ExperimentConfig)`` with the YAML file and the
command line's ``key=value`` overrides, then ``to_object`` runs every ``__post_init__``. Unknown keys, wrong types
and invalid values raise :class:`ConfigError` with one line naming the key, the file and what was expected.
No torch import here: ``pico --help`` and config errors stay fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pico_lightning.config.checks import ConfigError
from pico_lightning.config.data import DataConfig
from pico_lightning.config.evaluation import EvalConfig
from pico_lightning.config.model import LoraConfig, ModelConfig
from pico_lightning.config.run import LoggingConfig, RunConfig
from pico_lightning.config.train import TrainConfig
from pico_lightning.errors import UserError
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


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, validated; errors name the key and the file."""
    source = str(path) if path else "<defaults>"
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"{source}: experiment file not found")
    try:
        layers = [OmegaConf.structured(ExperimentConfig)]
        if path is not None:
            layers.append(OmegaConf.load(path))
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(OmegaConf.merge(*layers))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        message = str(getattr(err, "msg", err)).splitlines()[0]
        raise ConfigError(f"{source}: {key}: {message}") from None
    except Exception as err:  # YAML syntax and dotlist parse errors
        raise ConfigError(f"{source}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what every run directory and checkpoint keeps)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_container(cfg: ExperimentConfig) -> dict:
    """The resolved config as plain dicts and lists (safe for ``torch.load(weights_only=True)``)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(to_yaml(cfg))
    os.replace(tmp, path)
