"""MTEB/BEIR evaluation of students, teachers and asymmetric pairs (``embedkd eval``).

Imports are lazy so that ``embedkd --help`` stays fast::

    from eval import evaluate
    result = evaluate("runs/leaf-minilm", "beir:../shared/data/beir-scifact",
                      teacher="sentence-transformers/all-mpnet-base-v2", modes="student,teacher,asym")
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "evaluate": "eval.api",
    "run": "eval.api",
    "EvalResult": "eval.api",
    "EvalConfig": "eval.config",
    "Mode": "eval.config",
    "Precision": "eval.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
