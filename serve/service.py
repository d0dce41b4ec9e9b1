"""The search engine behind the HTTP API: index + document store + models + durability. No HTTP here.

Write path (one lock): the teacher embeds the documents (through its cache) → one durable SQLite
transaction stores them *and* their write-ahead records → the FAISS index is updated → the caller
acknowledges. Every ``snapshot_every`` writes the index is snapshotted atomically and the records it
now holds are dropped from the log. Start-up loads the live snapshot and replays the records after it,
so an acknowledged write survives a crash at any point.

Read-only services (no teacher, or replicas sharing a directory) never write to the directory; they
replay the log in memory and, with ``refresh_seconds``, follow the writer by re-syncing periodically.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkd.errors import EmbedkdError
from serve.builder import STORE_FILE
from serve.encoders import QueryEncoder, load_index_teacher, load_query_encoder
from serve.index import IndexMeta, VectorIndex
from serve.snapshot import current_name, empty_like, read_meta, read_snapshot, write_snapshot
from serve.store import DocStore, Document, WalRecord, matches

logger = logging.getLogger(__name__)


class ReadOnlyError(EmbedkdError):
    """A write reached a service that cannot write (no teacher configured, or a read-only replica)."""


class UnknownFieldError(EmbedkdError):
    """A filter names a metadata field no document has."""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    title: str | None = None
    text: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceOptions:
    """Engine knobs (the HTTP settings map onto these).

    Attributes:
        read_only: never write to the index directory.
        mmap: memory-map the snapshot instead of reading it (implies read_only).
        snapshot_every: snapshot after this many acknowledged writes (0: only at shutdown).
        overfetch: hits fetched per wanted hit when filtering or when stale ids may exist.
        cache_dir: teacher cache root.
        teacher_batch_size: teacher batch size for document embedding.
        device: torch device for the models.
        quantize: ``int8`` runs the query encoder's ONNX int8 graph (None: the backend's default).
        backend: query encoder runtime: ``torch``, ``onnx`` or ``openvino``.
        threads: CPU threads of the ONNX / OpenVINO runtime (None: all cores).
    """

    read_only: bool = False
    mmap: bool = False
    snapshot_every: int = 1000
    overfetch: int = 4
    cache_dir: str | None = None
    teacher_batch_size: int = 32
    device: str | None = None
    quantize: str | None = None
    backend: str = "torch"
    threads: int | None = None


class SearchService:
    """Asymmetric search over one index directory: documents by the teacher, queries by the student.

    Use :meth:`open`; call :meth:`close` when done (snapshots pending writes).
    """

    def __init__(
        self, index_dir: Path, meta: IndexMeta, encoder: QueryEncoder, teacher, options: ServiceOptions
    ):
        self.index_dir, self.meta, self.encoder, self.teacher = index_dir, meta, encoder, teacher
        self.options = options
        self.read_only = options.read_only or options.mmap or teacher is None
        self._writer_lock = None if self.read_only else _lock_writer(index_dir)
        self.store = DocStore(index_dir / STORE_FILE, read_only=self.read_only)
        self._write_lock = threading.Lock()
        self._encoder_lock = threading.Lock()  # the query path reads, a hot swap replaces the reference
        self._encoded_by = threading.local()
        self.encoder_generation = 0
        self._cache = None
        self._since_snapshot = 0
        self.delta: VectorIndex | None = None
        self._load()

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        student: str | QueryEncoder,
        teacher: str | object | None = None,
        options: ServiceOptions = ServiceOptions(),
    ) -> SearchService:
        """Open ``index_dir`` with ``student`` as query encoder and optional ``teacher`` for writes.

        Raises:
            EmbedkdError: not an index directory, corrupt snapshot, or a model that does not fit it.
        """
        index_dir = Path(index_dir)
        meta = read_meta(index_dir)
        encoder = (
            load_query_encoder(
                student,
                meta,
                device=options.device,
                quantize=options.quantize,
                backend=options.backend,
                threads=options.threads,
            )
            if isinstance(student, (str, Path))
            else student  # an encoder object (QueryEncoder, an ONNX encoder, a test fake)
        )
        if encoder.dim != meta.dim:
            raise EmbedkdError(f"query encoder outputs {encoder.dim}-d vectors, the index holds {meta.dim}-d")
        if isinstance(teacher, str):
            teacher = load_index_teacher(teacher, meta, device=options.device)
        elif teacher is not None and (teacher.id != meta.teacher_id or teacher.dim != meta.dim):
            raise EmbedkdError(f"teacher {teacher.id!r} is not the index's teacher {meta.teacher_id!r}")
        return cls(index_dir, meta, encoder, teacher, options)

    # ------------------------------------------------------------- durability
    def _load(self) -> None:
        snap = read_snapshot(self.index_dir, self.meta, mmap=self.options.mmap)
        self.index, self.applied_seq, self.snapshot_name = snap.index, snap.applied_seq, snap.name
        self.delta = empty_like(self.meta) if self.options.mmap else None
        first = self.store.first_seq()
        if first is not None and first > self.applied_seq + 1 and self.store.last_seq() > self.applied_seq:
            raise EmbedkdError(
                f"{self.index_dir}: the write-ahead log starts at {first} but the snapshot ends at "
                f"{self.applied_seq}; records are missing (restore the directory from a backup)"
            )
        replayed = self._replay()
        if replayed:
            logger.info("replayed %d write-ahead record(s) after snapshot %s", replayed, self.snapshot_name)
            if not self.read_only:
                self.snapshot()

    def _replay(self) -> int:
        n = 0
        for record in self.store.records_after(self.applied_seq):
            self._apply(record)
            n += 1
        return n

    def _apply(self, record: WalRecord) -> None:
        target = self.delta if self.delta is not None else self.index
        if record.old_vid is not None:
            target.remove([record.old_vid])
        if record.op == "upsert":
            target.add([record.vid], record.vector.reshape(1, -1))
        self.applied_seq = max(self.applied_seq, record.seq)

    def snapshot(self) -> str | None:
        """Write the index atomically and drop the log records it now holds (writable services only)."""
        if self.read_only:
            return None
        with self._write_lock:
            name = write_snapshot(self.index_dir, self.index, self.applied_seq)
            self.store.truncate_wal(self.applied_seq)
            self.snapshot_name, self._since_snapshot = name, 0
        return name

    def sync(self) -> int:
        """Follow another process's writes (read-only replicas): reload a newer snapshot, replay the log."""
        name = current_name(self.index_dir)
        if name and name != self.snapshot_name and int(name.split("-")[1]) > self.applied_seq:
            snap = read_snapshot(self.index_dir, self.meta, mmap=self.options.mmap)
            delta = empty_like(self.meta) if self.options.mmap else None
            self.index, self.delta, self.applied_seq, self.snapshot_name = (
                snap.index,
                delta,
                snap.applied_seq,
                snap.name,
            )
        return self._replay()

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
            return self._teacher_cache().encode(
                self.teacher, list(texts), "document", batch_size=self.options.teacher_batch_size
            )

    def upsert(self, docs: Sequence[Document]) -> int:
        """Embed and store ``docs`` durably (replacing same-id documents); returns how many."""
        self._check_writable()
        ids = [d.id for d in docs]
        if len(set(ids)) != len(ids):
            raise EmbedkdError("duplicate document ids in one upsert")
        vectors = self.embed_documents([d.embed_text for d in docs])
        with self._write_lock:
            for record in self.store.upsert(docs, vectors):
                self._apply(record)
            self._since_snapshot += len(docs)
        self._maybe_snapshot()
        return len(docs)

    def delete(self, doc_id: str) -> bool:
        """Delete ``doc_id`` durably; False when it does not exist."""
        self._check_writable()
        with self._write_lock:
            record = self.store.delete(doc_id)
            if record is None:
                return False
            self._apply(record)
            self._since_snapshot += 1
        self._maybe_snapshot()
        return True

    def _maybe_snapshot(self) -> None:
        every = self.options.snapshot_every
        if every and self._since_snapshot >= every:
            self.snapshot()

    def _check_writable(self) -> None:
        if self.teacher is None:
            raise ReadOnlyError(
                "this service is read-only: no teacher is configured (start it with --teacher)"
            )
        if self.read_only:
            raise ReadOnlyError("this service is a read-only replica")

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

    def check_filter(self, filters: dict | None) -> None:
        if filters:
            unknown = sorted(set(filters) - self.store.fields)
            if unknown:
                known = ", ".join(sorted(self.store.fields)) or "none"
                raise UnknownFieldError(
                    f"unknown filter field(s) {', '.join(unknown)}; known fields: {known}"
                )

    def search(
        self, vectors: np.ndarray, k: int, filters: dict | None = None, include_text: bool = False
    ) -> list[list[Hit]]:
        """Top-``k`` documents per query vector, optionally filtered on metadata equality."""
        self.check_filter(filters)

        def accept(_row: int, ids: np.ndarray) -> np.ndarray:
            docs = self.store.lookup(ids.tolist(), with_text=False)
            return np.array(
                [i in docs and (not filters or matches(docs[i].metadata, filters)) for i in ids.tolist()]
            )

        hits = self.index.search(vectors, k, accept, self.options.overfetch)
        if self.delta is not None and self.delta.ntotal:
            extra = self.delta.search(vectors, k, accept, self.options.overfetch)
            hits = [_merge_hits(main, recent, k) for main, recent in zip(hits, extra)]
        docs = self.store.lookup([vid for row in hits for vid, _ in row], with_text=include_text)
        return [
            [
                Hit(docs[vid].id, score, docs[vid].title, docs[vid].text, docs[vid].metadata)
                for vid, score in row
                if vid in docs  # deleted between search and lookup
            ]
            for row in hits
        ]

    def stats(self) -> dict:
        return {
            "documents": self.store.count(),
            "vectors": self.index.ntotal + (self.delta.ntotal if self.delta is not None else 0),
            "index_type": self.meta.index_type,
            "shards": self.meta.shards,
            "dim": self.meta.dim,
            "normalize": self.meta.normalize,
            "teacher": self.meta.teacher_id,
            "teacher_loaded": self.teacher is not None,
            "student": self.encoder.name,
            "student_max_seq_length": self.encoder.max_seq_length,
            "read_only": self.read_only,
            "mmap": self.options.mmap,
            "snapshot": self.snapshot_name,
            "applied_seq": self.applied_seq,
            "metadata_fields": sorted(self.store.fields),
        }

    def close(self) -> None:
        """Snapshot what the live snapshot lacks (writable services), then close the store."""
        if not self.read_only and self.store.last_seq() > int(self.snapshot_name.split("-")[1]):
            self.snapshot()
        self.store.close()
        if self._writer_lock is not None:
            self._writer_lock.close()  # releases the flock
            self._writer_lock = None


def _lock_writer(index_dir: Path):
    """Hold an exclusive lock on the directory: one writer at a time (released by the OS if it dies)."""
    handle = (index_dir / "writer.lock").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise EmbedkdError(
            f"{index_dir} is already open for writing by another process; start this one with --read-only"
        ) from None
    return handle


def _merge_hits(main: list, recent: list, k: int) -> list:
    """Top ``k`` of the snapshot index's and the recent-writes index's hits, one per id.

    A document written after the snapshot can be in both (its snapshot vector may be stale); the
    recent one wins, and a duplicate never takes a slot from another document.
    """
    seen = {vid for vid, _ in recent}
    return sorted(recent + [h for h in main if h[0] not in seen], key=lambda h: -h[1])[:k]
