"""SALGL: Scene-Aware Label Graph Learning (ICCV 2023) for multi-label image classification."""

from salgl_core import presets  # noqa: F401  declares the recipe names the config validates (registry.recipes)
from salgl_core.config import ConfigError, DataConfig, ExperimentConfig, ModelConfig, TrainConfig

__all__ = ["ConfigError", "DataConfig", "ExperimentConfig", "ModelConfig", "TrainConfig"]
