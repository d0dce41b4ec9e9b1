"""Teachers: the models whose vector space a student is distilled into.

A teacher is an :class:`~embedkd.encoders.Encoder` that also tells which prompt it puts before each
role's texts (:class:`Teacher`), so the teacher cache can key vectors by it. This module holds the
protocol, the local :class:`SentenceTransformerTeacher` (with its query/document prompts when it has
them) and :func:`load_teacher`, which builds any teacher from a string; the teachers whose vectors come
from elsewhere (precomputed ``.npy``, an OpenAI-compatible HTTP endpoint) live in
:mod:`embedkd.external_teachers`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from embedkd.encoders import Encoder, check_role
from embedkd.external_teachers import HTTPTeacher, PrecomputedTeacher

__all__ = ["HTTPTeacher", "PrecomputedTeacher", "SentenceTransformerTeacher", "Teacher", "load_teacher"]

logger = logging.getLogger(__name__)


class Teacher(Encoder, Protocol):
    """An :class:`~embedkd.encoders.Encoder` whose prompts are known, so its vectors can be cached.

    ``id`` (model name plus anything that changes its vectors) and ``prompt(role)`` are part of the
    teacher-cache keys: two teachers with equal ids must give equal vectors.
    """

    def prompt(self, role: str | None) -> str:
        """The prompt prefixed to texts of ``role`` ('' when none); part of cache keys."""
        ...


class SentenceTransformerTeacher:
    """A local (or hub) SentenceTransformer used as teacher.

    Args:
        model: model string (see :func:`embedkd.hub.resolve_model`) or a loaded SentenceTransformer.
        max_seq_length: truncate inputs to this many tokens (part of :attr:`id`).
        device: torch device; default CPU/GPU as sentence-transformers picks.
        normalize: L2-normalise outputs.
    """

    def __init__(
        self,
        model,
        *,
        max_seq_length: int | None = None,
        device: str | None = None,
        normalize: bool = False,
        name: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        from embedkd.encoders import resolve_model_checked

        if isinstance(model, SentenceTransformer):
            self.model, self.name = model, name or _loaded_model_name(model)
        else:
            self.name = name or _canonical_name(str(model))
            self.model = SentenceTransformer(
                resolve_model_checked(str(model), "teacher model"), device=device
            )
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.normalize = normalize
        self.dim = int(self.model.get_embedding_dimension())
        self.id = (
            f"st:{self.name}@seq{self.model.max_seq_length}"
            + _weights_tag(self.name)
            + (":norm" if normalize else "")
        )

    def prompt(self, role: str | None) -> str:
        """The model's prompt for ``role``: ``query``, or the first of ``document``/``passage``/``corpus``."""
        prompts = self.model.prompts or {}
        names = ("query",) if check_role(role) == "query" else ("document", "passage", "corpus")
        return next((prompts[n] for n in names if prompts.get(n)), "")

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = "document",
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` with ``role``'s prompt (:class:`~embedkd.encoders.Encoder`; 32 per batch by default)."""
        vecs = self.model.encode(
            list(texts),
            prompt=self.prompt(role),  # explicit, even '': a default_prompt_name must not sneak in unkeyed
            batch_size=batch_size or 32,
            show_progress_bar=bool(show_progress),
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)


def _canonical_name(model: str) -> str:
    from embedkd.hub import OFFLINE_PACKAGES, _canonical

    if Path(model).expanduser().is_dir():  # "runs/x" from two working directories is two models
        return str(Path(model).expanduser().resolve())
    package = OFFLINE_PACKAGES.get(_canonical(model))
    return package.model_id if package else model


def _weights_tag(name: str) -> str:
    """``:w<digest>`` of a local model folder's weights (:func:`embedkd.hub.model_digest`); '' otherwise.

    A teacher retrained into the same folder must not be served its predecessor's cached vectors; the
    digest reads only the weights, so it survives copying the folder elsewhere.
    """
    from embedkd.hub import model_digest

    folder = Path(name)
    if not folder.is_absolute() or not folder.is_dir():
        return ""
    return f":w{model_digest(folder)[:10]}"


def _loaded_model_name(model) -> str:
    """A name for an already loaded model: its hub id, else the folder its weights came from."""
    card = getattr(model, "model_card_data", None)
    if card is not None and card.base_model:
        return str(card.base_model)
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    path = getattr(config, "_name_or_path", "")
    if path:
        return _canonical_name(path)
    logger.warning("teacher model has no name; pass name= so that its cached vectors are not confused")
    return "model"


def load_teacher(
    spec: str,
    *,
    max_seq_length: int | None = None,
    device: str | None = None,
    http_model: str | None = None,
    **kwargs,
) -> Teacher:
    """Build a teacher from a string.

    ``http(s)://HOST[...]`` → :class:`HTTPTeacher` (model from ``http_model`` or a ``#model`` suffix);
    ``*.npy`` → :class:`PrecomputedTeacher`; anything else → :class:`SentenceTransformerTeacher`.
    """
    if spec.startswith(("http://", "https://")):
        url, _, model = spec.partition("#")
        return HTTPTeacher(url, http_model or model or "default", **kwargs)
    if spec.endswith(".npy"):
        return PrecomputedTeacher(spec, **kwargs)
    return SentenceTransformerTeacher(spec, max_seq_length=max_seq_length, device=device, **kwargs)
