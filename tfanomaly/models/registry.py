"""Family registry: name -> (config dataclass, model class).

Config classes live in :mod:`tfanomaly.family_configs` (no TensorFlow import),
model classes are imported lazily, so loading a config stays fast.
"""

from __future__ import annotations

import importlib

from tfanomaly import family_configs as configs

_MODELS = {
    "grdnet": "tfanomaly.models.grdnet:GRDNet",
    "ganomaly": "tfanomaly.models.ganomaly:GANomaly",
    "autoencoder": "tfanomaly.models.autoencoder:Autoencoder",
    "adgan": "tfanomaly.models.adgan:ADGAN",
    "cyclegan": "tfanomaly.models.cyclegan:CycleGANAD",
}
assert set(_MODELS) == set(configs.FAMILIES)


def names() -> list[str]:
    return sorted(_MODELS)


def config_class(name: str):
    return configs.FAMILIES[name]


def model_class(name: str):
    module, cls = _MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build(cfg):
    """Build the family's keras.Model for a full Config."""
    return model_class(cfg.family).from_run_config(cfg)
