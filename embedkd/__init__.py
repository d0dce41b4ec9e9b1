"""embedkd: distil large embedding models into small ones that stay in the teacher's vector space.

The public API is imported lazily so that ``import embedkd`` (and ``embedkd --help``) stays fast::

    import embedkd
    out = embedkd.distill(teacher="sentence-transformers/all-mpnet-base-v2",
                          student="sentence-transformers/all-MiniLM-L6-v2",
                          data="texts.txt", output="runs/leaf-minilm")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "distill": "embedkd.methods",
    "DistillConfig": "embedkd.config",
    "LeafConfig": "embedkd.methods.leaf.config",
    "resolve_model": "embedkd.hub",
    "load_teacher": "embedkd.teachers",
    "TeacherCache": "embedkd.cache",
    "load_texts": "embedkd.data",
    "EmbedkdError": "embedkd.errors",
    "export_model": "embedkd.export",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embedkd' has no attribute {name!r}")
