"""Distillation methods, one module each, looked up by name.

A method module exposes ``add_arguments(parser)`` (its own options, added after the common ones of
``embedkd distill``) and ``run_from_args(args) -> pathlib.Path`` (the output directory). Its Python
API is a plain function (``embedkd.methods.leaf.api.distill`` and so on).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from embedkd.errors import ConfigError

METHODS: dict[str, str] = {
    "leaf": "embedkd.methods.leaf.api",
    "dse": "embedkd.methods.dse.api",
    "dclip": "embedkd.methods.dclip.api",
    "ontology": "embedkd.methods.ontology.api",
}


def get_method(name: str) -> ModuleType:
    """Return the module implementing distillation method ``name``."""
    if name not in METHODS:
        raise ConfigError(f"unknown --method {name!r}; choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])
