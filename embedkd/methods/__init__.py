"""The distillation methods, one package each, looked up by name; :func:`distill` runs any of them.

A method package exposes ``CONFIG`` (its config class, extending :class:`~embedkd.config.DistillConfig`)
and ``run(config) -> pathlib.Path`` (the output directory). Every method takes the same leading
arguments -- teacher, student, data, output -- and its own options as keywords named like its fields.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from embedkd.errors import ConfigError

METHODS: dict[str, str] = {
    "leaf": "embedkd.methods.leaf",
    "dse": "embedkd.methods.dse",
    "dclip": "embedkd.methods.dclip",
    "ontology": "embedkd.methods.ontology",
}


def get_method(name: str) -> ModuleType:
    """Return the package implementing distillation method ``name``."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def make_config(method: str = "leaf", **options: Any) -> Any:
    """The validated config of ``method`` with ``options`` (unknown names are a clear error)."""
    cls = get_method(method).CONFIG
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for method {method!r}; known: {', '.join(sorted(known))}"
        )
    return cls(**options)


def distill(
    method: str = "leaf",
    teacher: str | None = None,
    student: str | None = None,
    data: str | Path | Sequence[str | Path] | None = None,
    output: str | Path | None = None,
    **options: Any,
) -> Path:
    """Distil ``teacher`` into ``student`` with ``method``; returns the output directory.

    Args:
        method: ``leaf`` (default), ``dse``, ``dclip`` or ``ontology``.
        teacher: the teacher (a model string; for ``ontology`` give ``ontologies`` instead).
        student: the student to start from.
        data: training data file(s) or folder(s).
        output: output directory (loads with ``SentenceTransformer(output)``, or ``CLIPModel`` for dclip).
        **options: any other field of the method's config (``epochs``, ``max_steps``, ``lr``, ...).

    Example::

        import embedkd
        out = embedkd.distill(teacher="sentence-transformers/all-mpnet-base-v2",
                              student="sentence-transformers/all-MiniLM-L6-v2",
                              data="texts.txt", output="runs/leaf-minilm", max_steps=200)
    """
    given = {"teacher": teacher, "student": student, "data": data, "output": output}
    options.update({k: v for k, v in given.items() if v is not None})
    config = make_config(method, **options)
    return get_method(method).run(config)


def run(config: Any) -> Path:
    """Run an already built method config (its class says which method)."""
    return get_method(config.method).run(config)
