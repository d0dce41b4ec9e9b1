"""The search engine behind the HTTP API: index + document store + models + durability. No HTTP here.

Write path (one lock): the teacher embeds the documents (through its cache) → one durable SQLite
transaction stores them *and* their write-ahead records → the FAISS index is updated → the caller
acknowledges. Every ``snapshot_every`` writes the index is snapshotted atomically and the records it
now holds are dropped from the log. Start-up loads the live snapshot and replays the records after it,
so an acknowledged write survives a crash at any point.

Start-up checks the snapshot, the log and the store against each other (:mod:`serve.verify`) and
refuses to start on any disagreement. A write that cannot be made durable (full disk, I/O error) is
refused with :class:`~serve.errors.StorageFullError` / :class:`~serve.errors.StorageIOError`; a
snapshot that fails after a durable write only logs a warning and is retried (:mod:`serve.durability`).

Read-only services (no teacher, or replicas sharing a directory) never write to the directory; they
replay the log in memory and, with ``refresh_seconds``, follow the writer by re-syncing periodically.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkd.errors import EmbedkdError
from serve.builder import STORE_FILE
from serve.durability import SnapshotPolicy, load_verified, lock_writer
from serve.encoders import QueryEncoder, load_index_teacher, load_query_encoder
from serve.errors import StorageFullError, StorageIOError
from serve.faults import storage_error
from serve.index import IndexMeta, VectorIndex
from serve.service_types import (
    Hit,
    ReadOnlyError,
    SearchResult,
    ServiceOptions,
    UnknownFieldError,
    merge_hits,
)
from serve.snapshot import current_name, empty_like, read_meta, read_snapshot, write_snapshot
from serve.store import DocStore, Document, WalRecord, matches

logger = logging.getLogger(__name__)

__all__ = ["Hit", "ReadOnlyError", "SearchResult", "SearchService", "ServiceOptions", "UnknownFieldError"]


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
        self._write_lock = threading.Lock()
        self._encoder_lock = threading.Lock()  # the query path reads, a hot swap replaces the reference
        self._encoded_by = threading.local()
        self.encoder_generation = 0
        self._cache = None
        self._snapshots = SnapshotPolicy(options.snapshot_every, options.snapshot_retry_seconds)
        self._documents = 0
        self.delta: VectorIndex | None = None
        self._writer_lock = None if self.read_only else lock_writer(index_dir)
        self.store = None
        try:  # never a store or snapshot the directory lacks: a missing docs.sqlite is an error
            self.store = DocStore(index_dir / STORE_FILE, read_only=self.read_only, create=False)
            self._load()
        except BaseException:
            self._release()
            raise

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        student: str | QueryEncoder,
        teacher: str | object | None = None,
        options: ServiceOptions | None = None,
    ) -> SearchService:
        """Open ``index_dir`` with ``student`` as query encoder and optional ``teacher`` for writes.

        Raises:
            EmbedkdError: not an index directory, or a model that does not fit it.
            ServiceStateError: the snapshot, the write-ahead log and the document store disagree, or
                one of them is damaged (the message says how to recover).
            StorageIOError: the directory cannot be opened (read-only filesystem, permissions).
        """
        options = options or ServiceOptions()
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
        snap, verified = load_verified(
            self.index_dir,
            self.meta,
            self.store,
            mmap=self.options.mmap,
            writer=not self.read_only,
            verify=self.options.verify,
        )
        self.index, self.applied_seq, self.snapshot_name = snap.index, snap.applied_seq, snap.name
        self.delta = empty_like(self.meta) if self.options.mmap else None
        self.store.raise_vid_floor(max(snap.next_vid or 1, verified.next_vid if verified else 1))
        replayed = self._replay()
        self._documents = self.store.count()  # kept in step with applied_seq by _apply from here on
        if replayed:
            logger.info("replayed %d write-ahead record(s) after snapshot %s", replayed, self.snapshot_name)
            self._snapshots.wrote(replayed)
            if not self.read_only:
                self._try_snapshot()

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
        if record.op == "delete":
            self._documents -= 1
        elif record.old_vid is None:
            self._documents += 1
        self.applied_seq = max(self.applied_seq, record.seq)

    def snapshot(self) -> str | None:
        """Write the index atomically and drop the log records it now holds (writable services only).

        Raises:
            StorageFullError, StorageIOError: the snapshot failed; the previous one stays live, the
                log keeps every write, and nothing is left behind on disk.
        """
        if self.read_only:
            return None
        with self._write_lock:
            name = write_snapshot(
                self.index_dir,
                self.index,
                self.applied_seq,
                next_vid=self.store.next_vid(),
                documents=self._documents,
            )
            self.snapshot_name = name
            self._snapshots.succeeded()
            try:
                self.store.truncate_wal(self.applied_seq)
            except (StorageFullError, StorageIOError) as exc:  # the next snapshot drops them
                logger.warning("snapshot %s is live; dropping the log records it holds failed: %s", name, exc)
        return name

    def _try_snapshot(self) -> None:
        try:
            self.snapshot()
        except (StorageFullError, StorageIOError) as exc:
            self._snapshots.failed(exc)

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
            try:
                return self._teacher_cache().encode(
                    self.teacher, list(texts), "document", batch_size=self.options.teacher_batch_size
                )
            except OSError as exc:  # the cache could not store the new vectors
                raise storage_error(exc, "caching the teacher's document vectors") from exc

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
            self._snapshots.wrote(len(docs))
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
            self._snapshots.wrote(1)
        self._maybe_snapshot()
        return True

    def _maybe_snapshot(self) -> None:
        """Snapshot when due; a failure is logged and retried later (the write is already durable)."""
        if self._snapshots.due():
            self._try_snapshot()

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
        return self.search_detailed(vectors, k, filters, include_text).hits

    def search_detailed(
        self, vectors: np.ndarray, k: int, filters: dict | None = None, include_text: bool = False
    ) -> SearchResult:
        """:meth:`search`, and per query row whether it stopped at ``max_candidates`` short of ``k``.

        A very selective filter could otherwise page through the whole index for every query.
        """
        self.check_filter(filters)

        def accept(_row: int, ids: np.ndarray) -> np.ndarray:
            docs = self.store.lookup(ids.tolist(), with_text=False)
            return np.array(
                [i in docs and (not filters or matches(docs[i].metadata, filters)) for i in ids.tolist()]
            )

        bound = (self.options.overfetch, self.options.max_candidates)
        hits, partial = self.index.search_bounded(vectors, k, accept, *bound)
        if self.delta is not None and self.delta.ntotal:
            extra, cut = self.delta.search_bounded(vectors, k, accept, *bound)
            hits = [merge_hits(main, recent, k) for main, recent in zip(hits, extra)]
            partial = [a or b for a, b in zip(partial, cut)]
        docs = self.store.lookup([vid for row in hits for vid, _ in row], with_text=include_text)
        rows = [
            [
                Hit(docs[vid].id, score, docs[vid].title, docs[vid].text, docs[vid].metadata)
                for vid, score in row
                if vid in docs  # deleted between search and lookup
            ]
            for row in hits
        ]
        return SearchResult(rows, partial)

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
            "snapshot_error": self._snapshots.error,
            "metadata_fields": sorted(self.store.fields),
        }

    def close(self) -> None:
        """Snapshot what the live snapshot lacks (writable services; a failure only warns), then close."""
        try:
            if not self.read_only and self.store.last_seq() > int(self.snapshot_name.split("-")[1]):
                self._try_snapshot()
        finally:
            self._release()

    def _release(self) -> None:
        if self.store is not None:
            self.store.close()
        if self._writer_lock is not None:
            self._writer_lock.close()  # releases the flock
            self._writer_lock = None
