"""Name -> reproduction class. Reproduction modules register themselves on import.

Every entry is a declarative :class:`~beyondgd.experiments.harness.Reproduction`."""

from __future__ import annotations

import importlib
from typing import Any

_REGISTRY: dict[str, type[Any]] = {}

# Modules imported by ``load_builtin`` (each registers one or more experiments).
BUILTIN_MODULES = (
    "beyondgd.experiments.fuse",
    "beyondgd.experiments.weep",
    "beyondgd.experiments.cdec",
    "beyondgd.experiments.dlc",
    "beyondgd.experiments.adm",
)


def register(cls: type[Any]) -> type[Any]:
    """Class decorator adding an experiment to the registry under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"an experiment named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def load_builtin() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def names() -> list[str]:
    """Registered experiment names in registration order."""
    load_builtin()
    return list(_REGISTRY)


def get(name: str) -> Any:
    """A fresh instance of the experiment called ``name``."""
    load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()
