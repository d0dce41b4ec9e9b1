"""What every search service shares, whatever holds its vectors: the models and their checks.

A service embeds queries with the student (hot-swappable between micro-batches) and documents with the
index's teacher (through the teacher cache). Where the vectors and documents live is a subclass's job:
:class:`serve.service.SearchService` keeps them in the index directory (FAISS + SQLite),
:class:`serve.milvus_service.MilvusSearchService` in a Milvus collection. Both answer the same calls,
so the HTTP layer, the alignment monitor and the student swap never know which one they hold.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from embedkd.errors import ConfigError, EmbedkdError
from serve.encoders import QueryEncoder, load_index_teacher, load_query_encoder
from serve.faults import storage_error
from serve.index import IndexMeta
from serve.service_types import Hit, ReadOnlyError, SearchResult, ServiceOptions
from serve.store import Document
from serve.store_config import StoreKind, read_store_config


def load_models(meta: IndexMeta, student, teacher, options: ServiceOptions) -> tuple:
    """The query encoder and the (optional) teacher for an index, both checked against ``meta``.

    ``student`` / ``teacher`` are model strings (loaded here) or already-loaded objects.

    Raises:
        EmbedkdError: the student's dimension, or the teacher's identity, is not the index's.
    """
    if isinstance(student, (str, Path)):
        encoder = load_query_encoder(
            student,
            meta,
            device=options.device,
            quantize=options.quantize,
            backend=options.backend,
            threads=options.threads,
        )
    else:  # an encoder object (QueryEncoder, an ONNX encoder, a test fake)
        encoder = student
    if encoder.dim != meta.dim:
        raise EmbedkdError(f"query encoder outputs {encoder.dim}-d vectors, the index holds {meta.dim}-d")
    if isinstance(teacher, str):
        teacher = load_index_teacher(teacher, meta, device=options.device)
    elif teacher is not None and (teacher.id != meta.teacher_id or teacher.dim != meta.dim):
        raise EmbedkdError(f"teacher {teacher.id!r} is not the index's teacher {meta.teacher_id!r}")
    return encoder, teacher


def encoder_runtime(encoder) -> str:
    """What runs ``encoder``: ``torch``, ``onnx``, ``onnx-int8``, ``openvino`` or ``openvino-int8``."""
    backend = getattr(encoder, "backend", None)
    if not isinstance(backend, str) or not backend:  # a SentenceTransformer (or a test fake)
        return "torch"
    return f"{backend}-int8" if getattr(encoder, "quantized", False) else backend


def check_store_kind(index_dir: Path, kind: StoreKind, options: ServiceOptions) -> None:
    """Refuse to open ``index_dir`` as ``kind`` when it records another store or ``options`` ask another."""
    recorded = read_store_config(index_dir).kind
    if options.store is not None and StoreKind.parse(options.store) is not recorded:
        raise ConfigError(
            f"--store {StoreKind.parse(options.store).value}: {index_dir} is a {recorded.value} index "
            f"(serve it with --store {recorded.value}, or build another with embedkd index --store ...)"
        )
    if recorded is not kind:
        raise ConfigError(f"{index_dir} is a {recorded.value} index, not {kind.value}")


class BaseSearchService:
    """The models of a search service; subclasses add the storage (see the module docstring).

    Storage calls every subclass answers: :meth:`check_filter`, :meth:`search_detailed`,
    :meth:`upsert`, :meth:`delete`, :meth:`stats`, :meth:`sync`, :meth:`snapshot`, :meth:`close`, and
    ``store.get(doc_id)`` / ``store.count()`` for the HTTP routes.
    """

    store_kind: ClassVar[StoreKind]

    def __init__(
        self, index_dir: Path, meta: IndexMeta, encoder: QueryEncoder, teacher, options: ServiceOptions
    ):
        self.index_dir, self.meta, self.encoder, self.teacher = index_dir, meta, encoder, teacher
        self.options = options
        self.read_only = options.read_only or teacher is None
        self._write_lock = threading.Lock()
        self._encoder_lock = threading.Lock()  # the query path reads, a hot swap replaces the reference
        self._encoded_by = threading.local()
        self.encoder_generation = 0
        self._cache = None

    # ----------------------------------------------------------------- writes
    def _teacher_cache(self):
        from embedkd.cache import TeacherCache

        if self._cache is None:
            self._cache = TeacherCache.for_teacher(self.teacher, self.options.cache_dir)
        return self._cache

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Teacher vectors of ``texts`` (through the teacher cache)."""
        if self.teacher is None:
            raise ReadOnlyError(
                "no teacher is configured; start the service with --teacher to embed documents"
            )
        with self._write_lock:  # the cache is not thread-safe
            try:
                return self._teacher_cache().encode(
                    self.teacher, list(texts), "document", batch_size=self.options.teacher_batch_size
                )
            except OSError as exc:  # the cache could not store the new vectors
                raise storage_error(exc, "caching the teacher's document vectors") from exc

    def _check_writable(self) -> None:
        if self.teacher is None:
            raise ReadOnlyError(
                "this service is read-only: no teacher is configured (start it with --teacher)"
            )
        if self.read_only:
            raise ReadOnlyError("this service is a read-only replica")

    def _check_upsert(self, docs: Sequence[Document]) -> None:
        self._check_writable()
        ids = [d.id for d in docs]
        if len(set(ids)) != len(ids):
            raise EmbedkdError("duplicate document ids in one upsert")

    # ------------------------------------------------------------------ reads
    def encode_queries(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Student vectors of ``texts`` (one forward pass) and which were truncated.

        A batch runs on the encoder it started with: :meth:`swap_encoder` never interrupts it.
        """
        with self._encoder_lock:
            encoder, generation = self.encoder, self.encoder_generation
        self._encoded_by.generation = generation
        return encoder.encode(texts, "query"), encoder.truncated(texts)

    def last_encoder_generation(self) -> int:
        """Which student (:attr:`encoder_generation`) ran this thread's last :meth:`encode_queries`."""
        return getattr(self._encoded_by, "generation", self.encoder_generation)

    def swap_encoder(self, encoder: QueryEncoder) -> QueryEncoder:
        """Serve queries with ``encoder`` from the next batch on (one reference swap); returns the old one.

        Raises:
            EmbedkdError: its dimension is not the index's.
        """
        if encoder.dim != self.meta.dim:
            raise EmbedkdError(
                f"query encoder outputs {encoder.dim}-d vectors, the index holds {self.meta.dim}-d"
            )
        with self._encoder_lock:
            old, self.encoder = self.encoder, encoder
            self.encoder_generation += 1
        return old

    def embed_teacher_queries(self, texts: Sequence[str], *, cached: bool = True) -> np.ndarray:
        """Teacher vectors of ``texts`` as queries (the alignment monitor's), through the cache if ``cached``."""
        if self.teacher is None:
            raise ReadOnlyError("no teacher is configured; start the service with --teacher")
        if not cached:
            return self.teacher.encode(list(texts), "query", batch_size=self.options.teacher_batch_size)
        with self._write_lock:  # the cache is not thread-safe
            return self._teacher_cache().encode(
                self.teacher, list(texts), "query", batch_size=self.options.teacher_batch_size
            )

    def forget_teacher_queries(self, texts: Sequence[str]) -> int:
        """Delete the cached teacher vectors of ``texts`` as queries; returns how many were cached."""
        from embedkd.cache import text_key

        if self.teacher is None or not texts:
            return 0
        prompt = self.teacher.prompt("query")
        keys = [text_key(self.teacher.id, prompt, t) for t in texts]
        with self._write_lock:
            return self._teacher_cache().delete(keys)

    def search(
        self, vectors: np.ndarray, k: int, filters: dict | None = None, include_text: bool = False
    ) -> list[list[Hit]]:
        """Top-``k`` documents per query vector, optionally filtered on metadata equality."""
        return self.search_detailed(vectors, k, filters, include_text).hits

    def search_detailed(
        self, vectors: np.ndarray, k: int, filters: dict | None = None, include_text: bool = False
    ) -> SearchResult:
        raise NotImplementedError

    def model_stats(self) -> dict:
        """The models' part of :meth:`stats`."""
        return {
            "dim": self.meta.dim,
            "normalize": self.meta.normalize,
            "teacher": self.meta.teacher_id,
            "teacher_loaded": self.teacher is not None,
            "student": self.encoder.name,
            "student_backend": encoder_runtime(self.encoder),
            "student_max_seq_length": self.encoder.max_seq_length,
            "read_only": self.read_only,
        }
