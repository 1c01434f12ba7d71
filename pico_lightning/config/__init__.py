"""The experiment schema, one module per concern, and its loader (see experiment.py). No torch import."""

from pico_lightning.config.checks import ConfigError
from pico_lightning.config.data import DataConfig
from pico_lightning.config.evaluation import HELD_IN_GROUPS, SEED_STRIDE, EvalConfig
from pico_lightning.config.experiment import ExperimentConfig, load_config, save_config, to_container, to_yaml
from pico_lightning.config.model import LoraConfig, ModelConfig
from pico_lightning.config.run import LoggingConfig, RunConfig
from pico_lightning.config.train import TrainConfig

__all__ = [
    "HELD_IN_GROUPS",
    "SEED_STRIDE",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "save_config",
    "to_container",
    "to_yaml",
]
