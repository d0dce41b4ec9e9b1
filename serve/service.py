"""The FAISS search engine behind the HTTP API: index + document store + durability. No HTTP here.

The models (student, teacher and its cache) are :class:`~serve.service_base.BaseSearchService`'s; an
index built with ``--store milvus`` is served by :mod:`serve.milvus_service` instead, and
:func:`open_search_service` opens either.

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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkd.errors import ConfigError
from serve.builder import STORE_FILE
from serve.durability import SnapshotPolicy, load_verified, lock_writer
from serve.encoders import QueryEncoder
from serve.errors import StorageFullError, StorageIOError
from serve.index import IndexMeta, VectorIndex
from serve.service_base import BaseSearchService, check_store_kind, load_models
from serve.service_types import (
    Hit,
    ReadOnlyError,
    SearchResult,
    ServiceOptions,
    UnknownFieldError,
    merge_hits,
)
from serve.snapshot import current_name, empty_like, read_meta, read_snapshot, write_snapshot
from serve.store import DocStore, Document, StoredDoc, WalRecord, matches
from serve.store_config import StoreKind, read_store_config

logger = logging.getLogger(__name__)

__all__ = [
    "Hit",
    "ReadOnlyError",
    "SearchResult",
    "SearchService",
    "ServiceOptions",
    "UnknownFieldError",
    "open_search_service",
]


def open_search_service(
    index_dir: str | Path,
    student: str | QueryEncoder,
    teacher: str | object | None = None,
    options: ServiceOptions | None = None,
):
    """Open ``index_dir`` with the service of the store it records: FAISS here, Milvus in a collection.

    Same arguments as :meth:`SearchService.open`; ``options.store`` (when set) must name the recorded
    store and ``options.uri`` replaces a Milvus index's recorded URI.

    Returns:
        A :class:`SearchService` or a :class:`serve.milvus_service.MilvusSearchService`.
    """
    options = options or ServiceOptions()
    if read_store_config(index_dir).kind is StoreKind.MILVUS:
        from serve.milvus_service import MilvusSearchService

        return MilvusSearchService.open(index_dir, student, teacher, options)
    return SearchService.open(index_dir, student, teacher, options)


class SearchService(BaseSearchService):
    """Asymmetric search over one FAISS index directory: documents by the teacher, queries by the student.

    Use :meth:`open` (or :func:`open_search_service`); call :meth:`close` when done (snapshots pending
    writes).
    """

    store_kind = StoreKind.FAISS

    def __init__(
        self, index_dir: Path, meta: IndexMeta, encoder: QueryEncoder, teacher, options: ServiceOptions
    ):
        super().__init__(index_dir, meta, encoder, teacher, options)
        self.read_only = self.read_only or options.mmap
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
        check_store_kind(index_dir, cls.store_kind, options)
        if options.uri is not None:
            raise ConfigError(f"--uri {options.uri} names a Milvus store; {index_dir} is a FAISS index")
        encoder, teacher = load_models(meta, student, teacher, options)
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
    def upsert(self, docs: Sequence[Document]) -> int:
        """Embed and store ``docs`` durably (replacing same-id documents); returns how many."""
        self._check_upsert(docs)
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

    # ------------------------------------------------------------------ reads
    def check_filter(self, filters: dict | None) -> None:
        if filters:
            unknown = sorted(set(filters) - self.store.fields)
            if unknown:
                known = ", ".join(sorted(self.store.fields)) or "none"
                raise UnknownFieldError(
                    f"unknown filter field(s) {', '.join(unknown)}; known fields: {known}"
                )

    def search_detailed(
        self, vectors: np.ndarray, k: int, filters: dict | None = None, include_text: bool = False
    ) -> SearchResult:
        """:meth:`search`, and per query row whether it stopped at ``max_candidates`` short of ``k``.

        A very selective filter could otherwise page through the whole index for every query.
        """
        self.check_filter(filters)
        seen: dict[int, StoredDoc] = {}  # candidates read while checking them, reused for the answer

        def accept(_row: int, ids: np.ndarray) -> np.ndarray:
            # One read per candidate batch: whether it is still a document (stale vids are absent), its
            # metadata for the filter, and, unfiltered, the very fields the answer shows.
            docs = self.store.lookup(ids.tolist(), with_text=include_text and not filters)
            seen.update(docs)
            if not filters:
                return np.array([i in docs for i in ids.tolist()])
            return np.array([i in docs and matches(docs[i].metadata, filters) for i in ids.tolist()])

        # Unfiltered, nearly every candidate is a live document: ask for k (more only if some are stale).
        bound = (self.options.overfetch if filters else 1, self.options.max_candidates)
        hits, partial = self.index.search_bounded(vectors, k, accept, *bound)
        if self.delta is not None and self.delta.ntotal:
            extra, cut = self.delta.search_bounded(vectors, k, accept, *bound)
            hits = [merge_hits(main, recent, k) for main, recent in zip(hits, extra)]
            partial = [a or b for a, b in zip(partial, cut)]
        docs = seen
        if filters and include_text:  # the filter read no text: read the k answers' now
            docs = self.store.lookup([vid for row in hits for vid, _ in row], with_text=True)
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
            "store": self.store_kind.value,
            "documents": self.store.count(),
            "vectors": self.index.ntotal + (self.delta.ntotal if self.delta is not None else 0),
            "index_type": self.meta.index_type,
            "shards": self.meta.shards,
            **self.model_stats(),
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
