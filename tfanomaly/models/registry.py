"""Family registry: name -> (config dataclass, model class).

Config classes live in :mod:`tfanomaly.models.configs` (no TensorFlow import),
model classes are imported lazily, so loading a config stays fast.
"""

from __future__ import annotations

import importlib

from tfanomaly.models import configs

_FAMILIES = {
    "grdnet": (configs.GRDNetConfig, "tfanomaly.models.grdnet:GRDNet"),
    "ganomaly": (configs.GANomalyConfig, "tfanomaly.models.ganomaly:GANomaly"),
    "autoencoder": (configs.AutoencoderConfig, "tfanomaly.models.autoencoder:Autoencoder"),
    "adgan": (configs.ADGANConfig, "tfanomaly.models.adgan:ADGAN"),
    "cyclegan": (configs.CycleGANConfig, "tfanomaly.models.cyclegan:CycleGANAD"),
}


def names() -> list[str]:
    return sorted(_FAMILIES)


def config_class(name: str):
    return _FAMILIES[name][0]


def model_class(name: str):
    module, cls = _FAMILIES[name][1].split(":")
    return getattr(importlib.import_module(module), cls)


def build(cfg):
    """Build the family's keras.Model for a full Config."""
    return model_class(cfg.family).from_run_config(cfg)
