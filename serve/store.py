"""The document store: SQLite (WAL mode) for id → text, title, metadata, plus the write-ahead log.

Every acknowledged write is one SQLite transaction (``synchronous=FULL``, so it is on disk when
``commit`` returns) that updates ``docs`` *and* appends a ``wal`` record carrying the document's
vector. The FAISS index is updated only after that commit, so after a crash the index is rebuilt
from the last snapshot plus the ``wal`` records it lacks (see :mod:`serve.service`).

Each document version gets a fresh vector id (``vid``, never reused): a re-upserted document is a
new vector, and a search hit whose ``vid`` no longer maps to a document is stale and dropped.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkd.errors import EmbedkdError

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


@dataclass(frozen=True)
class Document:
    """One document as users give it."""

    id: str
    text: str
    title: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def embed_text(self) -> str:
        """What the teacher embeds: ``"title text"`` as mteb/BEIR build it, or the text alone."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(frozen=True)
class StoredDoc:
    """A document as stored, with its current vector id."""

    id: str
    vid: int
    title: str | None
    text: str
    metadata: dict


@dataclass(frozen=True)
class WalRecord:
    """One write-ahead record: ``upsert`` (add ``vid``, drop ``old_vid``) or ``delete`` (drop ``old_vid``)."""

    seq: int
    op: str
    doc_id: str
    vid: int | None
    old_vid: int | None
    vector: np.ndarray | None


class DocStore:
    """SQLite documents + write-ahead log. Reads use one connection per thread; writes one lock.

    Args:
        path: the ``docs.sqlite`` file.
        read_only: open without write access (replicas serving a directory another process writes).
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path, self.read_only = Path(path), read_only
        if read_only and not self.path.exists():
            raise EmbedkdError(f"document store {self.path} does not exist")
        self._local = threading.local()
        self._write_lock = threading.Lock()
        if not read_only:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: readers and writer run concurrently
            conn.executescript(SCHEMA)
            conn.commit()
        self._fields = {row[0] for row in self._conn().execute("SELECT name FROM fields")}

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                if self.read_only:
                    conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                else:
                    conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.DatabaseError as exc:
                raise EmbedkdError(f"document store {self.path} is unreadable or corrupt ({exc})") from exc
            self._local.conn = conn
        return conn

    # ----------------------------------------------------------------- writes
    def upsert(self, docs: Sequence[Document], vectors: np.ndarray, *, log: bool = True) -> list[WalRecord]:
        """Store ``docs`` with their vectors in one durable transaction; returns the records to apply.

        ``log=False`` (bulk index builds, snapshotted right after) skips the write-ahead records.
        """
        self._check_writable()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        records = []
        with self._write_lock:
            conn = self._conn()
            try:
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
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            for doc in docs:
                self._fields.update(doc.metadata)
        return records

    def delete(self, doc_id: str) -> WalRecord | None:
        """Delete ``doc_id`` durably; ``None`` when it does not exist."""
        self._check_writable()
        with self._write_lock:
            conn = self._conn()
            try:
                row = conn.execute("SELECT vid FROM docs WHERE id = ?", (doc_id,)).fetchone()
                if row is None:
                    return None
                conn.execute("DELETE FROM docs WHERE id = ?", (doc_id,))
                cur = conn.execute(
                    "INSERT INTO wal (op, doc_id, vid, old_vid, vector) VALUES ('delete', ?, NULL, ?, NULL)",
                    (doc_id, row[0]),
                )
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return WalRecord(int(cur.lastrowid), "delete", doc_id, None, int(row[0]), None)

    def truncate_wal(self, upto_seq: int) -> None:
        """Drop write-ahead records a live snapshot already contains."""
        self._check_writable()
        with self._write_lock:
            conn = self._conn()
            conn.execute("DELETE FROM wal WHERE seq <= ?", (upto_seq,))
            conn.commit()

    def _next_vid(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM kv WHERE key = 'next_vid'").fetchone()
        return int(row[0]) if row else 1

    def _check_writable(self) -> None:
        if self.read_only:
            raise EmbedkdError("the document store is open read-only")

    # ------------------------------------------------------------------ reads
    def last_seq(self) -> int:
        """The highest write-ahead sequence number ever issued (0 when none)."""
        row = self._conn().execute("SELECT seq FROM sqlite_sequence WHERE name = 'wal'").fetchone()
        return int(row[0]) if row else 0

    def records_after(self, seq: int, batch: int = 1024) -> Iterator[WalRecord]:
        """Write-ahead records with sequence number > ``seq``, in order."""
        while True:
            rows = (
                self._conn()
                .execute(
                    "SELECT seq, op, doc_id, vid, old_vid, vector FROM wal WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, batch),
                )
                .fetchall()
            )
            if not rows:
                return
            for s, op, doc_id, vid, old_vid, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32) if blob is not None else None
                yield WalRecord(int(s), op, doc_id, vid, old_vid, vec)
            seq = int(rows[-1][0])

    def first_seq(self) -> int | None:
        row = self._conn().execute("SELECT MIN(seq) FROM wal").fetchone()
        return row[0]

    def lookup(self, vids: Sequence[int], *, with_text: bool = True) -> dict[int, StoredDoc]:
        """Documents currently holding ``vids`` (stale or unknown vids are simply absent)."""
        vids = [int(v) for v in vids]
        if not vids:
            return {}
        cols = "id, vid, title, text, metadata" if with_text else "id, vid, title, NULL, metadata"
        marks = ",".join("?" * len(vids))
        rows = self._conn().execute(f"SELECT {cols} FROM docs WHERE vid IN ({marks})", vids).fetchall()
        return {r[1]: StoredDoc(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows}

    def get(self, doc_id: str) -> StoredDoc | None:
        row = (
            self._conn()
            .execute("SELECT id, vid, title, text, metadata FROM docs WHERE id = ?", (doc_id,))
            .fetchone()
        )
        return StoredDoc(row[0], row[1], row[2], row[3], json.loads(row[4])) if row else None

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def all_vids(self) -> list[int]:
        return [r[0] for r in self._conn().execute("SELECT vid FROM docs ORDER BY vid")]

    @property
    def fields(self) -> set[str]:
        """Metadata field names any stored document has (what filters may name)."""
        if self.read_only:
            self._fields = {row[0] for row in self._conn().execute("SELECT name FROM fields")}
        return set(self._fields)

    def integrity_check(self) -> str:
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def matches(metadata: dict, filters: dict) -> bool:
    """Equality filter: every field equals the value (or one of the values, for a list)."""
    for name, wanted in filters.items():
        value = metadata.get(name)
        if isinstance(wanted, list):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True
