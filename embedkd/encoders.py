"""The encoder protocol: texts and a role in, float32 vectors out.

Everything that embeds text speaks it: the teachers (:mod:`embedkd.teachers`), eval's student and
teacher encoders (:mod:`eval.encoders`) and the query encoder behind the search service
(:mod:`serve.encoders`). Code that only needs vectors takes an :class:`Encoder` and works with any
of them. :class:`SentenceTransformerEncoder` is a student (any SentenceTransformer) as an encoder.

Example::

    def embed_corpus(encoder: Encoder, texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, "document", show_progress=True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from embedkd.errors import EmbedkdError

QUERY, DOCUMENT = "query", "document"
ROLES = (QUERY, DOCUMENT)


class Encoder(Protocol):
    """What an encoder must offer.

    Attributes:
        id: stable identity (model name plus anything that changes its vectors); teachers' ids are
            part of the teacher-cache keys.
        dim: output dimension.
    """

    id: str
    dim: int

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = DOCUMENT,
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(len(texts), dim)``.

        Args:
            texts: the texts, embedded in this order.
            role: ``query`` or ``document`` selects that side of an asymmetric model (its prompt,
                its router route). ``None`` marks a symmetric input (STS sentences): a model's plain
                path where it has one, else the document side (see :func:`check_role`).
            batch_size: texts per forward pass or request; None: the encoder's own default.
            show_progress: a tqdm bar while encoding; None: the encoder's own default.
        """
        ...


def check_role(role: str | None) -> str:
    """``role`` as ``query`` or ``document``; a symmetric input (``None``) is embedded as a document.

    Raises:
        EmbedkdError: any other role.
    """
    if role is None:
        return DOCUMENT
    if role not in ROLES:
        raise EmbedkdError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return role


class SentenceTransformerEncoder:
    """A SentenceTransformer (a student) as an :class:`Encoder`, called the way mteb's own wrapper calls it.

    ``query`` runs ``encode_query`` and ``document`` ``encode_document`` (the model's prompts, its
    :mod:`~embedkd.asym` routes); ``None`` runs plain ``encode``. Unlike a teacher's, these vectors are
    not cached, so the model's default prompt may apply.

    Args:
        model: a loaded ``SentenceTransformer``.
        name: identity (:attr:`id`) used in reports.
        batch_size: default encoding batch size.
        show_progress: default for tqdm progress bars while encoding.
    """

    def __init__(self, model: Any, name: str, *, batch_size: int = 32, show_progress: bool = False) -> None:
        self.model, self.id = model, name
        self.batch_size, self.show_progress = batch_size, show_progress
        self.dim = int(model.get_embedding_dimension())

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = DOCUMENT,
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` with the model's ``role`` path (see :class:`Encoder`)."""
        fn = {QUERY: self.model.encode_query, DOCUMENT: self.model.encode_document}.get(
            role or "", self.model.encode
        )
        vecs = fn(
            list(texts),
            batch_size=batch_size or self.batch_size,
            show_progress_bar=self.show_progress if show_progress is None else show_progress,
            convert_to_numpy=True,
        )
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)


class TruncationReport:
    """Which query texts an encoder embeds cut (for a tokenizer-holding encoder with ``max_seq_length``)."""

    tokenizer: Any
    max_seq_length: int

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text before truncation (special tokens included)."""
        ids = self.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)[
            "input_ids"
        ]
        return [len(x) for x in ids]

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """Which of ``texts`` are longer than ``max_seq_length`` tokens (and so embedded cut)."""
        return [n > self.max_seq_length for n in self.token_counts(texts)]
