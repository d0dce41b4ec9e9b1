"""Which runtime encodes queries: ``torch`` (the SentenceTransformer as saved), ``onnx`` or ``openvino``.

A model given to a fast backend may already be an export (``embedkd export``); any other
SentenceTransformer is exported once, checked like any export, into embedkd's cache
(``$EMBEDKD_CACHE/exported/``) and reused from there on, keyed by the content of its weights.

Example::

    encoder = load_query_encoder("runs/leaf-minilm", "onnx", quantize="int8")
    vectors = encoder.encode(["what causes fever?"], "query")
"""

from __future__ import annotations

import logging
import re
import shutil
from enum import Enum
from pathlib import Path
from typing import Any

from embedkd.errors import ConfigError

logger = logging.getLogger(__name__)


class Backend(str, Enum):
    """The runtime that runs a query encoder."""

    TORCH = "torch"
    ONNX = "onnx"
    OPENVINO = "openvino"


BACKENDS = tuple(b.value for b in Backend)


def parse_backend(value: str | Backend | None) -> Backend:
    """``value`` as a :class:`Backend` (None: torch).

    Raises:
        ConfigError: an unknown backend, naming the choices.
    """
    if value is None or isinstance(value, Backend):
        return value or Backend.TORCH
    try:
        return Backend(str(value).strip().lower())
    except ValueError:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {value!r}") from None


def exported_folder(spec: str, backend: str | Backend, *, quantize: str | None = None) -> Path:
    """A folder holding ``spec`` exported for ``backend`` (int8 when ``quantize`` is ``int8``).

    ``spec`` itself when it is such an export; otherwise an export made once into the cache.

    Raises:
        EmbedkdError: not a model, a missing runtime package, or an export that fails its check.
    """
    from embedkd.export import model_folder
    from embedkd.onnx_encoder import read_export_info

    backend = parse_backend(backend)
    if backend is Backend.TORCH:
        raise ConfigError("the torch backend runs the SentenceTransformer itself; nothing to export")
    folder = model_folder(spec)
    info = read_export_info(folder)
    if _holds(info, backend.value, quantize):
        return folder
    for made in (
        (quantize, "int8") if not quantize else (quantize,)
    ):  # an int8 export holds the fp32 graph too
        target = _cache_folder(folder, backend.value, made)
        if _holds(read_export_info(target), backend.value, quantize):
            return target
    target = _cache_folder(folder, backend.value, quantize)
    return _export_into_cache(folder, target, backend.value, quantize)


def _holds(info: dict | None, backend: str, quantize: str | None) -> bool:
    files = (info or {}).get("files", {}).get(backend) or {}
    return bool(files) and (not quantize or quantize in files)


def _cache_folder(folder: Path, backend: str, quantize: str | None) -> Path:
    from embedkd.hub import cache_root, model_digest

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-") or "model"
    return (
        cache_root()
        / "exported"
        / f"{slug}-{model_digest(folder)}-{backend}{'-' + quantize if quantize else ''}"
    )


def _export_into_cache(folder: Path, target: Path, backend: str, quantize: str | None) -> Path:
    from filelock import FileLock

    from embedkd.export import export_model
    from embedkd.onnx_encoder import read_export_info

    target.parent.mkdir(parents=True, exist_ok=True)
    # Replicas started together export once; the others wait and find it done.
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if not _holds(read_export_info(target), backend, quantize):
            for stale in target.parent.glob(f".{target.name}.export-*"):  # a killed export's leftovers
                shutil.rmtree(stale, ignore_errors=True)
            logger.info(
                "exporting %s for %s%s once, into %s",
                folder,
                backend,
                f" {quantize}" if quantize else "",
                target,
            )
            export_model(str(folder), target, format=backend, quantize=quantize)
    return target


def load_query_encoder(
    spec: str,
    backend: str | Backend = Backend.TORCH,
    *,
    quantize: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
    name: str | None = None,
) -> Any:
    """``spec`` as an :class:`~embedkd.encoders.Encoder` on ``backend``.

    ``torch`` loads the SentenceTransformer (``quantize`` then runs it as an ONNX int8 export, the
    replacement for PyTorch's deprecated eager quantization); ``onnx`` and ``openvino`` run an export,
    its int8 graph when ``quantize`` is ``int8`` or the export made one. ``threads`` sets the fast
    runtimes' CPU threads (None: all cores); ``device`` is torch's (the fast runtimes run on the CPU).

    Raises:
        ConfigError: an unknown backend or quantization, or a fast backend asked for a non-CPU device.
    """
    backend = parse_backend(backend)
    if quantize not in (None, "int8"):
        raise ConfigError(f"--quantize must be int8, got {quantize!r}")
    fast = backend is not Backend.TORCH or quantize
    if fast and device not in (None, "cpu"):
        what = f"--backend {backend.value}" if backend is not Backend.TORCH else "--quantize int8 (ONNX int8)"
        raise ConfigError(f"{what} runs on the CPU; drop --device {device}")
    if backend is Backend.TORCH and not quantize:
        from sentence_transformers import SentenceTransformer

        from embedkd.encoders import SentenceTransformerEncoder
        from embedkd.hub import resolve_model

        model = SentenceTransformer(resolve_model(spec), device=device or "cpu")
        return SentenceTransformerEncoder(
            model, name or spec, batch_size=batch_size, show_progress=show_progress
        )
    if backend is Backend.TORCH:
        backend = Backend.ONNX
    from embedkd.onnx_encoder import load_exported_encoder

    folder = exported_folder(spec, backend, quantize=quantize)
    return load_exported_encoder(
        folder,
        backend.value,
        quantized=True if quantize else None,
        name=name or spec,
        batch_size=batch_size,
        show_progress=show_progress,
        threads=threads,
    )
