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
        student_cosine REAL,                   -- cosine of the serving student's vector to it
        top10_overlap REAL);                   -- the monitor's top-10 overlap for it (added later:
                                               -- NULL in older rows; a log opened for writing
                                               -- without the column gets it)
    CREATE TABLE log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                                               -- format, teacher_id, dim
    CREATE TABLE trimmed (query TEXT PRIMARY KEY,  -- a text the trim removed from query_log whose
        since REAL NOT NULL);                  -- teacher-cache vector is still to be deleted

The cosine and overlap columns are the monitor's durable history (``embedkd monitor report``).

Trimmed queries leave the teacher cache too (with ``on_drop``, which the service points at its cache):
the trim's transaction records each text that no longer occurs in the log in ``trimmed``, and the texts
recorded there are handed to ``on_drop`` together, at the first append ``forget_after`` seconds after the
oldest was recorded, at :meth:`QueryLog.close`, at :meth:`QueryLog.clear`, and when the service opens the
log again after a crash. In batches because one cache deletion reads every cache chunk's keys (about
0.5 s at 130k cached vectors): once per append it would stall the monitor and the document writes.

Reading it elsewhere (``embedkd adapt``, ``embedkd monitor report``)::

    texts, vectors = read_query_log(index_dir)   # oldest first; vectors float32 (n, dim)
    history = read_monitor_history(index_dir)    # created, cosine, overlap per sample, oldest first
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
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
    created REAL NOT NULL, student_cosine REAL, top10_overlap REAL);
CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trimmed (query TEXT PRIMARY KEY, since REAL NOT NULL);
"""
TABLES = ("query_log", "log_meta")  # what a reader needs (a log from before ``trimmed`` has none)
WRITER_TABLES = (*TABLES, "trimmed")
LOG_FIX = "move it away or delete it (the service then starts a new, empty query log)"


class QueryLog:
    """Bounded, durable log of (query text, teacher vector) rows; safe to use from several threads.

    Args:
        path: the SQLite file (usually ``<index_dir>/querylog.sqlite``).
        teacher_id: the teacher whose vectors are logged (checked against an existing log).
        dim: their dimension.
        max_rows: most rows kept; the oldest go first.
        on_drop: deletes the teacher-cache vectors of texts the trim removed from the log (those still
            logged in a newer row are kept out); called in batches, see the module doc. A failure is
            logged, not raised, and the texts are handed over again later. None: nothing recorded.
        forget_after: seconds a trimmed text may wait for the next batch (0: handed over at once).

    Raises:
        ServiceStateError: the file is damaged (SQLite's quick_check runs at open).
        StorageIOError: it cannot be opened for writing (read-only folder).
        EmbedkdError: it holds another teacher's vectors.
    """

    def __init__(
        self,
        path: str | Path,
        teacher_id: str,
        dim: int,
        *,
        max_rows: int = 10_000,
        on_drop: Callable[[list[str]], object] | None = None,
        forget_after: float = 60.0,
    ) -> None:
        if max_rows < 1:
            raise EmbedkdError(f"--query-log-max must be >= 1, got {max_rows}")
        self.path, self.teacher_id, self.dim, self.max_rows = Path(path), teacher_id, int(dim), max_rows
        self.on_drop, self.forget_after = on_drop, forget_after
        self._retry_at = 0.0  # after a failed hand-over, none before this time
        self._lock = threading.Lock()
        #: bumped by :meth:`clear`; rows sampled before a clear are not logged after it.
        self.epoch = 0
        self._conn = open_checked(
            self.path, what="query log", tables=WRITER_TABLES, schema=SCHEMA, fix=LOG_FIX
        )
        try:
            self._conn.execute(
                "PRAGMA secure_delete=ON"
            )  # deleted text is overwritten, not left in free pages
            self._check_meta()
            self._add_overlap_column()
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

    def _add_overlap_column(self) -> None:
        """Give a log written before the overlap column existed that column (NULL in its old rows)."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(query_log)")}
        if "top10_overlap" not in columns:
            with self._conn:
                self._conn.execute("ALTER TABLE query_log ADD COLUMN top10_overlap REAL")

    def append(
        self,
        texts: Sequence[str],
        vectors: np.ndarray,
        cosines: Sequence[float | None] | None = None,
        overlaps: Sequence[float | None] | None = None,
        *,
        epoch: int | None = None,
    ) -> int:
        """Log ``texts`` with their teacher ``vectors`` in one durable transaction; returns rows written.

        ``cosines`` and ``overlaps`` are the monitor's figures for each text (None: not measured).
        ``epoch`` is :attr:`epoch` as it was when the queries were sampled: when the log was cleared
        since, nothing is written (0). Rows beyond ``max_rows`` are trimmed in the same transaction
        (the texts that left the log go to ``on_drop`` in batches, see the module doc).
        """
        if not len(texts):
            return 0
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)
        now, empty = time.time(), [None] * len(texts)
        scores = zip(cosines if cosines is not None else empty, overlaps if overlaps is not None else empty)
        rows = [(t, v.tobytes(), now, c, o) for t, v, (c, o) in zip(texts, vectors, scores)]
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return 0
            try:
                with self._conn:  # one transaction: the rows and the trim
                    self._conn.executemany(
                        "INSERT INTO query_log (query, teacher_vector, created, student_cosine, top10_overlap) "
                        "VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                    self._trim(now)
                due = self._forget_due(now)
            except (sqlite3.Error, OSError) as exc:
                raise storage_error(exc, f"logging {len(rows)} query(ies) in {self.path}") from exc
        if due:
            self.forget_trimmed()
        return len(rows)

    def _trim(self, now: float) -> None:
        """Delete the rows beyond ``max_rows`` (inside the caller's transaction), recording the texts
        that no longer occur in the log for ``on_drop``."""
        cut = self._conn.execute("SELECT MAX(id) FROM query_log").fetchone()[0] - self.max_rows
        if self.on_drop is not None:
            self._conn.execute(
                "INSERT OR IGNORE INTO trimmed SELECT DISTINCT query, ? FROM query_log WHERE id <= ? "
                "AND query NOT IN (SELECT query FROM query_log WHERE id > ?)",
                (now, cut, cut),
            )
        self._conn.execute("DELETE FROM query_log WHERE id <= ?", (cut,))

    def _forget_due(self, now: float) -> bool:
        oldest = self._conn.execute("SELECT MIN(since) FROM trimmed").fetchone()[0]
        return oldest is not None and now >= max(oldest + self.forget_after, self._retry_at)

    def forget_trimmed(self, *, strict: bool = False) -> int:
        """Hand every recorded trimmed text that is not logged again to ``on_drop``; returns how many.

        Args:
            strict: let a failure of ``on_drop`` raise (as a storage error) instead of logging it.
        """
        if self.on_drop is None:
            return 0
        try:
            with self._lock:
                query = "SELECT query FROM trimmed WHERE query NOT IN (SELECT query FROM query_log)"
                texts = [r[0] for r in self._conn.execute(query)]
            if texts and not self._hand_over(texts, strict):
                return 0
            with self._lock, self._conn:  # those logged again keep their cache vectors
                self._conn.execute("DELETE FROM trimmed WHERE query IN (SELECT query FROM query_log)")
                self._conn.executemany("DELETE FROM trimmed WHERE query = ?", [(t,) for t in texts])
        except (sqlite3.Error, OSError) as exc:
            raise storage_error(exc, f"deleting the trimmed queries of {self.path} from the cache") from exc
        return len(texts)

    def _hand_over(self, texts: list[str], strict: bool) -> bool:
        assert self.on_drop is not None
        try:
            self.on_drop(texts)
        except Exception:  # noqa: BLE001 - the rows are logged; the failure must be seen, not fatal
            if strict:
                raise
            self._retry_at = time.time() + max(self.forget_after, 1.0)
            logger.exception(
                "query log %s: the teacher-cache vectors of %d trimmed query(ies) could not be "
                "deleted yet (retried later)",
                self.path,
                len(texts),
            )
            return False
        logger.debug("query log %s: %d trimmed query(ies) left the teacher cache", self.path, len(texts))
        return True

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM query_log").fetchone()[0])

    def clear(self) -> list[str]:
        """Delete every row (durably) and return their texts; queries sampled before are not logged.

        Trimmed texts still waiting for ``on_drop`` are handed to it first; if that fails, nothing is
        cleared (the error is raised).
        """
        self.forget_trimmed(strict=True)
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
        """Hand the trimmed texts still waiting to ``on_drop``, then close the file."""
        try:
            self.forget_trimmed()
        except EmbedkdError as exc:  # closing must not fail; they are handed over at the next open
            logger.error("query log %s: %s", self.path, exc)
        with self._lock:
            self._conn.close()


def _open_for_reading(index_dir: str | Path) -> tuple[Path, sqlite3.Connection]:
    """The log of ``index_dir``, opened read-only (a running service can keep appending meanwhile)."""
    path = Path(index_dir) / QUERY_LOG_FILE
    if not Path(index_dir).is_dir():
        raise EmbedkdError(f"index directory {index_dir} does not exist")
    if not path.is_file():
        raise EmbedkdError(
            f"{index_dir} has no query log ({QUERY_LOG_FILE}); serve it with --monitor-sample "
            "and without --no-query-log"
        )
    return path, open_checked(path, what="query log", tables=TABLES, read_only=True, fix=LOG_FIX)


def read_query_log(index_dir: str | Path, teacher_id: str | None = None) -> tuple[list[str], np.ndarray]:
    """The logged queries of ``index_dir`` (oldest first) and their teacher vectors, float32 ``(n, dim)``.

    Args:
        index_dir: the index directory.
        teacher_id: when given, the log must hold this teacher's vectors.

    Raises:
        EmbedkdError: no index directory, no log, an unreadable one, or one of another teacher.
    """
    path, conn = _open_for_reading(index_dir)
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


def read_monitor_history(index_dir: str | Path) -> np.ndarray:
    """The monitor's logged figures of ``index_dir``, oldest first, without any query text.

    Returns:
        float64 ``(n, 3)``: unix time of the append, student-teacher cosine, top-10 overlap (NaN where
        not measured: no hits, or a row logged before the overlap was stored). Rows without a cosine
        (not logged by the monitor) are left out.

    Raises:
        EmbedkdError: no index directory, no log, or an unreadable one.
    """
    path, conn = _open_for_reading(index_dir)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(query_log)")}
        overlap = "top10_overlap" if "top10_overlap" in columns else "NULL"
        rows = conn.execute(
            f"SELECT created, student_cosine, {overlap} FROM query_log "  # {overlap}: a fixed name
            "WHERE student_cosine IS NOT NULL ORDER BY id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise storage_error(exc, f"reading query log {path}") from exc
    finally:
        conn.close()
    return np.array(rows, dtype=np.float64).reshape(len(rows), 3)
