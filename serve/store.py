"""The document store: SQLite (WAL mode) for id → text, title, metadata, plus the write-ahead log.

Every acknowledged write is one SQLite transaction (``synchronous=FULL``, so it is on disk when
``commit`` returns) that updates ``docs`` *and* appends a ``wal`` record carrying the document's
vector. The FAISS index is updated only after that commit, so after a crash the index is rebuilt
from the last snapshot plus the ``wal`` records it lacks (see :mod:`serve.service`).

Each document version gets a fresh vector id (``vid``, never reused): a re-upserted document is a
new vector, and a search hit whose ``vid`` no longer maps to a document is stale and dropped. The next
vid is the largest of every high-water mark there is (the ``kv`` counter, the stored and logged vids,
and a floor the service raises to the snapshot's own mark), so ids never go backwards.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

from embedkd.errors import EmbedkdError
from serve.errors import ServiceStateError
from serve.faults import storage_error
from serve.records import Document, StoredDoc, StoreState, WalRecord, matches
from serve.sqlite_files import connect, open_checked

logger = logging.getLogger(__name__)

__all__ = ["DocStore", "Document", "StoreState", "StoredDoc", "WalRecord", "matches"]

TABLES = ("docs", "wal", "fields", "kv")
#: ids per ``IN (...)`` statement: well under SQLite's variable limit (999 in builds before 3.32)
LOOKUP_CHUNK = 500
STORE_FIX = (
    "restore docs.sqlite (with its -wal file) from a backup, or rebuild the index from its corpus "
    "(`embedkd index --overwrite`)"
)
_F = TypeVar("_F", bound=Callable)


def _guarded(action: str) -> Callable[[_F], _F]:
    """Raise OS and SQLite failures of the wrapped method as the service's storage errors."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(exc, f"{action} ({self.path})") from exc

        return inner  # type: ignore[return-value]

    return wrap


SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id TEXT PRIMARY KEY, vid INTEGER NOT NULL UNIQUE, title TEXT, text TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS wal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, doc_id TEXT NOT NULL,
    vid INTEGER, old_vid INTEGER, vector BLOB);
CREATE TABLE IF NOT EXISTS fields (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class DocStore:
    """SQLite documents + write-ahead log. Reads use one connection per thread; writes one lock.

    Opening checks the file (see :func:`serve.sqlite_files.open_checked`): a missing, emptied, truncated
    or damaged ``docs.sqlite`` is a :class:`~serve.errors.ServiceStateError`, never a silent new store.
    A write that cannot be made durable raises :class:`~serve.errors.StorageFullError` or
    :class:`~serve.errors.StorageIOError` and leaves nothing behind; after each commit the write-ahead
    pages are copied into the database file, so losing SQLite's ``-wal`` file loses no acknowledged write.

    Args:
        path: the ``docs.sqlite`` file.
        read_only: open without write access (replicas serving a directory another process writes).
        create: create the file when missing (index builds); a serving index must already have it.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False, create: bool = True) -> None:
        self.path, self.read_only, self.create = Path(path), read_only, create
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._vid_floor = 1
        conn = open_checked(
            self.path,
            what="document store",
            tables=TABLES,
            read_only=read_only,
            create=create and not read_only,
            schema=SCHEMA,
            fix=STORE_FIX,
        )
        self._local.conn = conn
        self._fields = self._read_fields()
        # the counter covers the log's vids, unless it was lost: count them too
        self.raise_vid_floor(self._wal_top_vid() + 1)

    @_guarded("reading the write-ahead log")
    def _wal_top_vid(self) -> int:
        row = self._conn().execute("SELECT MAX(vid), MAX(old_vid) FROM wal").fetchone()
        return max(int(row[0] or 0), int(row[1] or 0))

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = connect(self.path, read_only=self.read_only, create=False)
            except sqlite3.Error as exc:
                raise storage_error(exc, f"opening {self.path}") from exc
            self._local.conn = conn
        return conn

    @_guarded("reading the metadata fields")
    def _read_fields(self) -> set[str]:
        return {row[0] for row in self._conn().execute("SELECT name FROM fields")}

    # ----------------------------------------------------------------- writes
    @_guarded("storing documents")
    def upsert(self, docs: Sequence[Document], vectors: np.ndarray, *, log: bool = True) -> list[WalRecord]:
        """Store ``docs`` with their vectors in one durable transaction; returns the records to apply.

        ``log=False`` (bulk index builds, snapshotted right after) skips the write-ahead records.

        Raises:
            StorageFullError, StorageIOError: nothing was stored.
        """
        self._check_writable()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        records = []
        with self._write_lock:
            conn = self._conn()
            with _transaction(conn):
                next_vid = self._next_vid(conn)
                for doc, vec in zip(docs, vectors):
                    row = conn.execute("SELECT vid FROM docs WHERE id = ?", (doc.id,)).fetchone()
                    old_vid, vid = (row[0] if row else None), next_vid
                    next_vid += 1
                    conn.execute(
                        "INSERT OR REPLACE INTO docs (id, vid, title, text, metadata) VALUES (?, ?, ?, ?, ?)",
                        (doc.id, vid, doc.title, doc.text, json.dumps(doc.metadata)),
                    )
                    conn.executemany(
                        "INSERT OR IGNORE INTO fields (name) VALUES (?)", [(k,) for k in doc.metadata]
                    )
                    seq = 0
                    if log:
                        cur = conn.execute(
                            "INSERT INTO wal (op, doc_id, vid, old_vid, vector) VALUES ('upsert', ?, ?, ?, ?)",
                            (doc.id, vid, old_vid, vec.tobytes()),
                        )
                        seq = int(cur.lastrowid)
                    records.append(WalRecord(seq, "upsert", doc.id, vid, old_vid, vec))
                conn.execute("INSERT OR REPLACE INTO kv VALUES ('next_vid', ?)", (str(next_vid),))
            for doc in docs:
                self._fields.update(doc.metadata)
            self._checkpoint(conn)
        return records

    @_guarded("deleting a document")
    def delete(self, doc_id: str) -> WalRecord | None:
        """Delete ``doc_id`` durably; ``None`` when it does not exist.

        Raises:
            StorageFullError, StorageIOError: nothing was deleted.
        """
        self._check_writable()
        with self._write_lock:
            conn = self._conn()
            with _transaction(conn):
                row = conn.execute("SELECT vid FROM docs WHERE id = ?", (doc_id,)).fetchone()
                if row is None:
                    return None
                conn.execute("DELETE FROM docs WHERE id = ?", (doc_id,))
                cur = conn.execute(
                    "INSERT INTO wal (op, doc_id, vid, old_vid, vector) VALUES ('delete', ?, NULL, ?, NULL)",
                    (doc_id, row[0]),
                )
            self._checkpoint(conn)
        return WalRecord(int(cur.lastrowid), "delete", doc_id, None, int(row[0]), None)

    @_guarded("dropping snapshotted write-ahead records")
    def truncate_wal(self, upto_seq: int) -> None:
        """Drop write-ahead records a live snapshot already contains."""
        self._check_writable()
        with self._write_lock:
            conn = self._conn()
            with _transaction(conn):
                conn.execute("DELETE FROM wal WHERE seq <= ?", (upto_seq,))
            self._checkpoint(conn)

    @_guarded("saving the vector-id counter")
    def save_vid_counter(self, next_vid: int) -> int:
        """Raise the stored vector-id counter to at least ``next_vid`` (durably); returns it."""
        self._check_writable()
        self.raise_vid_floor(next_vid)
        with self._write_lock:
            conn = self._conn()
            with _transaction(conn):
                value = self._next_vid(conn)
                conn.execute("INSERT OR REPLACE INTO kv VALUES ('next_vid', ?)", (str(value),))
            self._checkpoint(conn)
        return value

    @_guarded("reading the vector-id counter")
    def next_vid(self) -> int:
        """The next vector id this store would hand out (no id at or above it was ever used)."""
        return self._next_vid(self._conn())

    def raise_vid_floor(self, next_vid: int) -> None:
        """Never hand out a vector id below ``next_vid`` (the snapshot's high-water mark)."""
        self._vid_floor = max(self._vid_floor, int(next_vid))

    def _next_vid(self, conn: sqlite3.Connection) -> int:
        """Max of every high-water mark: the counter, the stored and logged vids, the floor."""
        row = conn.execute(
            "SELECT (SELECT value FROM kv WHERE key = 'next_vid'), (SELECT MAX(vid) FROM docs)"
        ).fetchone()
        return max(int(row[0] or 1), int(row[1] or 0) + 1, self._vid_floor)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy committed pages from SQLite's ``-wal`` file into the database file.

        The commit was already durable; this makes it independent of the ``-wal`` file, whose loss
        (deleted, garbled) would otherwise silently roll back acknowledged writes. A reader may hold
        back part of it for a moment: a few quick retries, and the next write finishes the rest.
        """
        for _ in range(3):
            try:
                _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except (sqlite3.Error, OSError) as exc:
                logger.warning("document store checkpoint failed (%s); retried after the next write", exc)
                return
            if copied >= frames:
                return
            time.sleep(0.002)

    def _check_writable(self) -> None:
        if self.read_only:
            raise EmbedkdError("the document store is open read-only")

    # ------------------------------------------------------------------ reads
    @_guarded("reading the write-ahead log")
    def last_seq(self) -> int:
        """The highest write-ahead sequence number ever issued (0 when none)."""
        row = self._conn().execute("SELECT seq FROM sqlite_sequence WHERE name = 'wal'").fetchone()
        return int(row[0]) if row else 0

    def records_after(self, seq: int, batch: int = 1024) -> Iterator[WalRecord]:
        """Write-ahead records with sequence number > ``seq``, in order."""
        sql = "SELECT seq, op, doc_id, vid, old_vid, vector FROM wal WHERE seq > ? ORDER BY seq LIMIT ?"
        for s, op, doc_id, vid, old_vid, blob in self._paged(
            sql, seq, 0, batch, "reading the write-ahead log"
        ):
            vec = np.frombuffer(blob, dtype=np.float32) if blob is not None else None
            yield WalRecord(int(s), op, doc_id, vid, old_vid, vec)

    def _paged(self, sql: str, after: int, key: int, batch: int, action: str) -> Iterator[tuple]:
        """Rows of ``sql`` (``WHERE <key> > ? ORDER BY <key> LIMIT ?``) one page at a time."""
        while True:
            try:
                rows = self._conn().execute(sql, (after, batch)).fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(exc, f"{action} ({self.path})") from exc
            if not rows:
                return
            yield from rows
            after = int(rows[-1][key])

    @_guarded("reading the store's state")
    def state(self, after_seq: int) -> StoreState:
        """Counts, vector ids and the log after ``after_seq``, all read in one consistent view."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            count = int(conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])
            vids = np.fromiter(
                (r[0] for r in conn.execute("SELECT vid FROM docs")), dtype=np.int64, count=count
            )
            wal = conn.execute(
                "SELECT seq, op, vid, old_vid FROM wal WHERE seq > ? ORDER BY seq", (after_seq,)
            ).fetchall()
            counter = conn.execute("SELECT value FROM kv WHERE key = 'next_vid'").fetchone()
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'wal'").fetchone()
            next_vid = self._next_vid(conn)
        finally:
            conn.rollback()
        return StoreState(
            count=count,
            vids=vids,
            wal_after=[(int(s), op, vid, old_vid) for s, op, vid, old_vid in wal],
            last_seq=int(row[0]) if row else 0,
            counter=int(counter[0]) if counter else None,
            next_vid=next_vid,
        )

    @_guarded("reading documents")
    def lookup(self, vids: Sequence[int], *, with_text: bool = True) -> dict[int, StoredDoc]:
        """Documents currently holding ``vids`` (stale or unknown vids are simply absent)."""
        vids = [int(v) for v in vids]
        cols = "id, vid, title, text, metadata" if with_text else "id, vid, title, NULL, metadata"
        out: dict[int, StoredDoc] = {}
        conn = self._conn()
        for start in range(0, len(vids), LOOKUP_CHUNK):  # SQLite caps the variables of one statement
            chunk = vids[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for r in conn.execute(f"SELECT {cols} FROM docs WHERE vid IN ({marks})", chunk):
                out[r[1]] = _stored(r)
        return out

    @_guarded("reading documents")
    def live(self, vids: Sequence[int]) -> set[int]:
        """The ``vids`` a document holds now: :meth:`lookup`'s keys, from the vid index alone (no row read)."""
        vids = [int(v) for v in vids]
        out: set[int] = set()
        conn = self._conn()
        for start in range(0, len(vids), LOOKUP_CHUNK):
            chunk = vids[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            out.update(r[0] for r in conn.execute(f"SELECT vid FROM docs WHERE vid IN ({marks})", chunk))
        return out

    @_guarded("reading a document")
    def get(self, doc_id: str) -> StoredDoc | None:
        row = (
            self._conn()
            .execute("SELECT id, vid, title, text, metadata FROM docs WHERE id = ?", (doc_id,))
            .fetchone()
        )
        return _stored(row) if row else None

    @_guarded("counting documents")
    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    @_guarded("reading documents")
    def all_vids(self) -> list[int]:
        return [r[0] for r in self._conn().execute("SELECT vid FROM docs ORDER BY vid")]

    def iter_docs(self, batch: int = 1024) -> Iterator[StoredDoc]:
        """Every document, in vector-id order (pages of ``batch``)."""
        sql = "SELECT id, vid, title, text, metadata FROM docs WHERE vid > ? ORDER BY vid LIMIT ?"
        for row in self._paged(sql, -1, 1, batch, "reading documents"):
            yield _stored(row)

    @property
    def fields(self) -> set[str]:
        """Metadata field names any stored document has (what filters may name)."""
        if self.read_only:
            self._fields = self._read_fields()
        return set(self._fields)

    @_guarded("checking the document store")
    def integrity_check(self) -> str:
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _stored(row: tuple) -> StoredDoc:
    try:  # most documents have none: skip the JSON decoder for them
        metadata = {} if row[4] == "{}" else json.loads(row[4])
    except (TypeError, ValueError) as exc:
        raise ServiceStateError(
            f"the document store row of {row[0]!r} (vector id {row[1]}) is damaged (metadata: {exc}); "
            + STORE_FIX
        ) from exc
    return StoredDoc(row[0], row[1], row[2], row[3], metadata)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Commit on success; on any failure roll back (best effort: a full disk may refuse that too)."""
    try:
        yield
        conn.commit()
    except BaseException:
        try:
            conn.rollback()
        except sqlite3.Error as exc:  # the original error is the one to report
            logger.warning("rollback failed after a failed write: %s", exc)
        raise
