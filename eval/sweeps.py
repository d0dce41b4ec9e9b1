"""Matryoshka truncation and output quantization applied to embeddings before mteb scores them.

Order: truncate to the first ``dim`` components, L2-renormalize, then quantize with
sentence-transformers' :func:`~sentence_transformers.util.quantization.quantize_embeddings`.
``int8``/``uint8`` use per-dimension ranges calibrated once on the *document side* and applied to both
sides (in asym mode too), so queries and documents share one codebook.

mteb scores float arrays, so the quantized codes are handed to it as float32 holding exactly the
information kept: ``int8`` codes as they are, ``uint8`` codes re-centred by −128 (they then rank like
``int8``), and ``binary``/``ubinary`` bits unpacked to ±1, where cosine similarity is
``1 − 2·hamming/dim`` — i.e. Hamming ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.config import Precision

CALIBRATED = (Precision.INT8, Precision.UINT8)


def truncate(embeddings: np.ndarray, dim: int | None) -> np.ndarray:
    """First ``dim`` components, L2-renormalized (``dim=None``: all components, renormalized)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if dim is not None:
        emb = emb[:, :dim]
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def calibrate(document_embeddings: np.ndarray, dim: int | None) -> np.ndarray:
    """Per-dimension (min, max) ranges, shape ``(2, dim)``, of the truncated document embeddings."""
    emb = truncate(document_embeddings, dim)
    return np.vstack((emb.min(axis=0), emb.max(axis=0)))


def quantize_codes(
    embeddings: np.ndarray, precision: Precision | str, ranges: np.ndarray | None = None
) -> np.ndarray:
    """Quantize float embeddings and return the codes as float32 (see the module docstring).

    Args:
        embeddings: float embeddings (already truncated/renormalized).
        precision: one of :class:`~eval.config.Precision`.
        ranges: ``(2, dim)`` calibration ranges for int8/uint8 (``None``: calibrated on ``embeddings``).
    """
    from sentence_transformers.util.quantization import quantize_embeddings

    precision = Precision(precision)
    emb = np.asarray(embeddings, dtype=np.float32)
    if precision is Precision.FLOAT32:
        return emb
    dim = emb.shape[1]
    if precision in CALIBRATED and ranges is None and len(emb) < 2:
        ranges = np.vstack((emb.min(axis=0) - 1.0, emb.max(axis=0) + 1.0))
    codes = quantize_embeddings(emb, precision=precision.value, ranges=ranges)
    if precision is Precision.INT8:
        return codes.astype(np.float32)
    if precision is Precision.UINT8:
        return codes.astype(np.float32) - 128.0
    packed = (codes.astype(np.int16) + 128).astype(np.uint8) if precision is Precision.BINARY else codes
    bits = np.unpackbits(packed, axis=1, count=dim)
    return bits.astype(np.float32) * 2.0 - 1.0


@dataclass(frozen=True, eq=False)
class OutputTransform:
    """What happens to a model's embeddings before mteb sees them.

    Attributes:
        dim: Matryoshka dimension (``None``: full).
        precision: output precision.
        ranges: int8/uint8 calibration ranges from the document side (``None``: per call).
    """

    dim: int | None = None
    precision: Precision = Precision.FLOAT32
    ranges: np.ndarray | None = None

    @property
    def is_identity(self) -> bool:
        """True when embeddings pass through unchanged (full dim, float32)."""
        return self.dim is None and self.precision is Precision.FLOAT32

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        emb = np.asarray(embeddings, dtype=np.float32)
        if self.is_identity:
            return emb
        return quantize_codes(truncate(emb, self.dim), self.precision, self.ranges)

    @property
    def label(self) -> str:
        """Short description, e.g. ``256d/int8``."""
        return f"{f'{self.dim}d' if self.dim else 'full'}/{self.precision.value}"
