"""What the search service needs from an external vector store, and the errors a store raises.

A store keeps, per document id, the teacher's vector together with the document (title, text,
metadata), so one search answers with everything a hit needs. :class:`serve.milvus_store.MilvusStore`
implements it over Milvus (Milvus Lite file or server); the FAISS index of :mod:`serve.index` with
the SQLite store of :mod:`serve.store` is the in-process alternative.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from embedkd.errors import EmbedkdError

if TYPE_CHECKING:
    from serve.index import IndexMeta
    from serve.store import Document

#: ``{"field": value}`` or ``{"field": [value, ...]}``: metadata equality, as :func:`serve.store.matches`.
Filters = Mapping[str, object]


class StoreHit(NamedTuple):
    """One search result; unpacks as ``(doc_id, score, title, text, metadata)``."""

    doc_id: str
    score: float
    title: str | None
    text: str | None
    metadata: dict


class StoredDocument(NamedTuple):
    """One stored document with its (normalised) vector when asked for."""

    doc_id: str
    title: str | None
    text: str
    metadata: dict
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class TeacherIdentity:
    """The teacher whose vectors a store holds: recorded when the store is created, checked on open.

    Attributes:
        teacher_id: the teacher's :attr:`~embedkd.teachers.Teacher.id` (model name, sequence length and,
            for a local folder, a digest of its weights).
        teacher_name: the model string it was loaded from (informational: a moved folder keeps its id).
        dim: vector dimension.
        normalize: vectors are L2-normalised, so inner product is cosine.
        query_prompt / document_prompt: the teacher's prompts for each role.
    """

    teacher_id: str
    teacher_name: str
    dim: int
    normalize: bool = True
    query_prompt: str = ""
    document_prompt: str = ""

    @classmethod
    def from_meta(cls, meta: IndexMeta) -> TeacherIdentity:
        """The identity recorded in a FAISS index's :class:`~serve.index.IndexMeta`."""
        return cls(
            teacher_id=meta.teacher_id,
            teacher_name=meta.teacher_name,
            dim=meta.dim,
            normalize=meta.normalize,
            query_prompt=meta.query_prompt,
            document_prompt=meta.document_prompt,
        )

    @classmethod
    def from_dict(cls, data: Mapping) -> TeacherIdentity:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def differences(self, other: TeacherIdentity) -> list[str]:
        """The fields that change the vectors (all but the name) where ``other`` differs."""
        return [
            name
            for name in ("teacher_id", "dim", "normalize", "query_prompt", "document_prompt")
            if getattr(self, name) != getattr(other, name)
        ]

    def describe(self) -> str:
        return f"{self.teacher_id!r} ({self.dim}-d{', normalised' if self.normalize else ''})"


class VectorStore(Protocol):
    """Documents and their teacher vectors under string ids, searchable with metadata filters."""

    identity: TeacherIdentity
    read_only: bool

    def upsert(self, docs: Sequence[Document], vectors: np.ndarray) -> int: ...

    def delete(self, ids: Sequence[str]) -> int: ...

    def search(
        self, query_vectors: np.ndarray, k: int, filters: Filters | None = None, include_text: bool = True
    ) -> list[list[StoreHit]]: ...

    def get(self, ids: Sequence[str], with_vectors: bool = False) -> dict[str, StoredDocument]: ...

    def count(self) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class StoreUnavailableError(EmbedkdError):
    """The store does not answer (server down, wrong URI, timeout); nothing was acknowledged."""

    status = 503
    code = "store_unavailable"


class StoreReadOnlyError(EmbedkdError):
    """A write reached a store opened read-only (a replica)."""

    status = 403
    code = "read_only"


class StoreMismatchError(EmbedkdError):
    """The store holds vectors of another teacher, or is not an embedkd store at all."""

    status = 500
    code = "state_corrupt"
