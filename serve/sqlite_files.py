"""Opening the service's SQLite files (documents, query log) without surprises.

Left to itself, ``sqlite3.connect`` creates an empty database where the file is missing, opens a
truncated or page-damaged one without a word, and reports a read-only folder only at the first write.
:func:`open_checked` refuses all of that at open time: a missing file is created only when asked, the
expected tables must be there, and ``PRAGMA quick_check`` must say ``ok``. Every failure is one
:class:`~serve.errors.ServiceStateError` (damaged or missing state) or
:class:`~serve.errors.StorageIOError` (cannot open) line that says what to do.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from serve.errors import ServiceStateError, StorageIOError
from serve.faults import describe, is_corrupt


def connect(path: Path, *, read_only: bool, create: bool = True) -> sqlite3.Connection:
    """A connection with full durability; never creates ``path`` unless ``create``.

    A read-only connection on a read-only filesystem opens the file as immutable: SQLite's WAL mode
    otherwise needs to write its ``-shm`` file even to read, and nothing can change it there anyway.
    """
    if read_only:
        immutable = "&immutable=1" if _on_read_only_fs(path) else ""
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro{immutable}", uri=True, check_same_thread=False
        )
    elif create:
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    else:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw", uri=True, check_same_thread=False, timeout=30
        )
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _on_read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def open_checked(
    path: Path,
    *,
    what: str,
    tables: Sequence[str],
    read_only: bool = False,
    create: bool = True,
    schema: str = "",
    fix: str = "restore it from a backup",
) -> sqlite3.Connection:
    """Open ``path``, check it is an intact database with ``tables``, and return the connection.

    Args:
        path: the SQLite file.
        what: what the file is, for messages ("document store").
        tables: tables it must have (after ``schema`` ran, when it may be created).
        read_only: open without write access.
        create: create the file and run ``schema`` when missing; otherwise a missing file is an error.
        schema: ``CREATE TABLE IF NOT EXISTS`` script run on writable opens with ``create``.
        fix: how to recover, appended to every state error.

    Raises:
        ServiceStateError: missing (and not to be created), emptied, truncated or damaged.
        StorageIOError: the file or its folder cannot be opened (permissions, read-only filesystem).
    """
    if not path.exists() and (read_only or not create):
        raise ServiceStateError(f"{what} {path} does not exist; {fix}")
    try:
        conn = connect(path, read_only=read_only, create=create)
    except sqlite3.Error as exc:
        raise _open_error(exc, path, what, read_only, fix) from exc
    try:
        _check(
            conn, path, what=what, tables=tables, read_only=read_only, create=create, schema=schema, fix=fix
        )
    except BaseException:
        conn.close()
        raise
    return conn


def _check(
    conn: sqlite3.Connection,
    path: Path,
    *,
    what: str,
    tables: Sequence[str],
    read_only: bool,
    create: bool,
    schema: str,
    fix: str,
) -> None:
    try:
        found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [t for t in tables if t not in found]
        if missing and create and not read_only:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: readers and the writer run concurrently
            conn.executescript(schema)
            conn.commit()
            missing = []
        if missing:
            state = "empty (it has no tables)" if not found else f"missing table(s) {', '.join(missing)}"
            raise ServiceStateError(f"{what} {path} is {state}; {fix}")
        verdict = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
        if verdict != ["ok"]:
            first = " ".join(verdict[0].split("\n")[:2]).replace("*** in database main *** ", "")
            raise ServiceStateError(f"{what} {path} is corrupt (SQLite quick_check: {first[:200]}); {fix}")
        if not read_only:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise _open_error(exc, path, what, read_only, fix) from exc


def _open_error(exc: sqlite3.Error, path: Path, what: str, read_only: bool, fix: str):
    if is_corrupt(exc):
        return ServiceStateError(f"{what} {path} is corrupt ({describe(exc)}); {fix}")
    mode = "" if read_only else " for writing"
    hint = (
        "check the folder's permissions and free space"
        if read_only
        else "is the folder read-only or full? fix that, or serve it with --read-only"
    )
    return StorageIOError(f"cannot open {what} {path}{mode} ({describe(exc)}); {hint}")
