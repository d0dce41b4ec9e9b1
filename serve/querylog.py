"""The query log: sampled live queries and their teacher vectors, kept durably in the index directory.

The alignment monitor (:mod:`serve.monitor`) appends every query it has embedded with the teacher;
``embedkd adapt`` reads them back as in-distribution training texts with ready teacher targets. Query
text is user data: no read endpoint of the service returns it, and ``DELETE /admin/query-log`` clears
the log (the service also deletes those queries' teacher-cache vectors).

Storage: SQLite file ``query_log.sqlite`` in the index directory, WAL journal, ``synchronous=FULL``, one
transaction per appended batch, so a ``kill -9`` keeps every batch whose commit returned. The log is
bounded: after each append the oldest rows beyond ``max_rows`` are deleted in the same transaction.

Schema (format 1)::

    CREATE TABLE query_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order; never reused
        query TEXT NOT NULL,                   -- the query text as the client sent it
        teacher_vector BLOB NOT NULL,          -- the teacher's query vector: float32, native byte
                                               -- order (little-endian here), dim values
        created REAL NOT NULL,                 -- unix time (seconds) of the append
        student_cosine REAL);                  -- cosine of the serving student's vector to it
    CREATE TABLE log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                                               -- format, teacher_id, dim

Reading it elsewhere (``embedkd adapt``)::

    texts, vectors = read_query_log(index_dir)   # oldest first; vectors float32 (n, dim)
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkd.errors import EmbedkdError
from serve.faults import storage_error
from serve.sqlite_files import open_checked

logger = logging.getLogger(__name__)

QUERY_LOG_FILE = "query_log.sqlite"
FORMAT_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS query_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, query TEXT NOT NULL, teacher_vector BLOB NOT NULL,
    created REAL NOT NULL, student_cosine REAL);
CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
TABLES = ("query_log", "log_meta")
LOG_FIX = "move it away or delete it (the service then starts a new, empty query log)"


class QueryLog:
    """Bounded, durable log of (query text, teacher vector) rows; safe to use from several threads.

    Args:
        path: the SQLite file (usually ``<index_dir>/querylog.sqlite``).
        teacher_id: the teacher whose vectors are logged (checked against an existing log).
        dim: their dimension.
        max_rows: most rows kept; the oldest go first.

    Raises:
        ServiceStateError: the file is damaged (SQLite's quick_check runs at open).
        StorageIOError: it cannot be opened for writing (read-only folder).
        EmbedkdError: it holds another teacher's vectors.
    """

    def __init__(self, path: str | Path, teacher_id: str, dim: int, *, max_rows: int = 10_000) -> None:
        if max_rows < 1:
            raise EmbedkdError(f"--query-log-max must be >= 1, got {max_rows}")
        self.path, self.teacher_id, self.dim, self.max_rows = Path(path), teacher_id, int(dim), max_rows
        self._lock = threading.Lock()
        #: bumped by :meth:`clear`; rows sampled before a clear are not logged after it.
        self.epoch = 0
        self._conn = open_checked(self.path, what="query log", tables=TABLES, schema=SCHEMA, fix=LOG_FIX)
        try:
            self._conn.execute(
                "PRAGMA secure_delete=ON"
            )  # deleted text is overwritten, not left in free pages
            self._check_meta()
        except (sqlite3.Error, OSError) as exc:
            self._conn.close()
            raise storage_error(exc, f"opening query log {self.path}") from exc
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def in_index(cls, index_dir: str | Path, teacher_id: str, dim: int, **kwargs) -> QueryLog:
        """The log of one index directory."""
        return cls(Path(index_dir) / QUERY_LOG_FILE, teacher_id, dim, **kwargs)

    def _check_meta(self) -> None:
        want = {"format": str(FORMAT_VERSION), "teacher_id": self.teacher_id, "dim": str(self.dim)}
        found = dict(self._conn.execute("SELECT key, value FROM log_meta").fetchall())
        if not found:
            with self._conn:
                self._conn.executemany("INSERT INTO log_meta VALUES (?, ?)", list(want.items()))
        elif found != want:
            raise EmbedkdError(
                f"query log {self.path} holds vectors of {found.get('teacher_id')!r} "
                f"({found.get('dim')}-d, format {found.get('format')}), not {self.teacher_id!r}; "
                "delete it (DELETE /admin/query-log) or move it away"
            )

    def append(
        self,
        texts: Sequence[str],
        vectors: np.ndarray,
        cosines: Sequence[float] | None = None,
        *,
        epoch: int | None = None,
    ) -> int:
        """Log ``texts`` with their teacher ``vectors`` in one durable transaction; returns rows written.

        ``epoch`` is :attr:`epoch` as it was when the queries were sampled: when the log was cleared
        since, nothing is written (0).
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
        now = time.time()
        scores = list(cosines) if cosines is not None else [None] * len(texts)
        rows = [(t, v.tobytes(), now, c) for t, v, c in zip(texts, vectors, scores)]
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return 0
            try:
                with self._conn:  # one transaction: the rows and the trim
                    self._conn.executemany(
                        "INSERT INTO query_log (query, teacher_vector, created, student_cosine) VALUES (?, ?, ?, ?)",
                        rows,
                    )
                    self._conn.execute(
                        "DELETE FROM query_log WHERE id <= (SELECT MAX(id) FROM query_log) - ?",
                        (self.max_rows,),
                    )
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(exc, f"logging {len(rows)} query(ies) in {self.path}") from exc
        return len(rows)

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM query_log").fetchone()[0])

    def clear(self) -> list[str]:
        """Delete every row (durably) and return their texts; queries sampled before are not logged."""
        with self._lock:
            try:
                texts = [row[0] for row in self._conn.execute("SELECT query FROM query_log ORDER BY id")]
                with self._conn:
                    self._conn.execute("DELETE FROM query_log")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # deleted text leaves the WAL file too
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(exc, f"clearing query log {self.path}") from exc
            self.epoch += 1
        logger.info("query log %s cleared (%d queries)", self.path, len(texts))
        return texts

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def read_query_log(index_dir: str | Path, teacher_id: str | None = None) -> tuple[list[str], np.ndarray]:
    """The logged queries of ``index_dir`` (oldest first) and their teacher vectors, float32 ``(n, dim)``.

    Opens the log read-only, so a running service can keep appending meanwhile.

    Args:
        index_dir: the index directory.
        teacher_id: when given, the log must hold this teacher's vectors.

    Raises:
        EmbedkdError: no log, an unreadable one, or one of another teacher.
    """
    path = Path(index_dir) / QUERY_LOG_FILE
    if not path.is_file():
        raise EmbedkdError(f"{index_dir} has no query log ({QUERY_LOG_FILE}); serve it with --monitor-sample")
    conn = open_checked(path, what="query log", tables=TABLES, read_only=True, fix=LOG_FIX)
    try:
        meta = dict(conn.execute("SELECT key, value FROM log_meta").fetchall())
        rows = conn.execute("SELECT query, teacher_vector FROM query_log ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        raise storage_error(exc, f"reading query log {path}") from exc
    finally:
        conn.close()
    if teacher_id is not None and meta.get("teacher_id") != teacher_id:
        raise EmbedkdError(f"query log {path} holds {meta.get('teacher_id')!r} vectors, not {teacher_id!r}")
    dim = int(meta.get("dim", 0))
    vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
    return [r[0] for r in rows], vectors.copy()
