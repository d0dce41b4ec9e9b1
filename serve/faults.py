"""Storage failures as the service's errors: one place that tells a full disk from other I/O and corruption.

SQLite and the OS report the same few conditions many ways (``sqlite3.OperationalError: database or disk
is full``, ``OSError(ENOSPC)``, ``sqlite3.DatabaseError: database disk image is malformed`` ...). The
stores, the snapshot writer and the query log convert them here at their boundary, so callers only see
:class:`~serve.errors.StorageFullError` (507), :class:`~serve.errors.StorageIOError` (503) or
:class:`~serve.errors.ServiceStateError` (corrupt state), each with one clear line.
"""

from __future__ import annotations

import errno
import sqlite3

from embedkd.errors import EmbedkdError
from serve.errors import ServiceStateError, StorageFullError, StorageIOError

# SQLite primary result codes (https://www.sqlite.org/rescode.html)
_SQLITE_FULL = 13
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in _DISK_FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return (code is not None and code & 0xFF == _SQLITE_FULL) or "disk is full" in str(exc)
    return False


def is_corrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite finding a damaged or foreign file (not a transient I/O failure)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return "malformed" in str(exc) or "not a database" in str(exc)


def describe(exc: BaseException) -> str:
    """``exc`` in a few words: the OS's message (with the path) or SQLite's."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def storage_error(exc: BaseException, action: str) -> EmbedkdError:
    """The service error for ``exc`` raised while ``action`` (e.g. "storing 3 document(s)").

    Disk full → :class:`StorageFullError`; a damaged file → :class:`ServiceStateError`; any other
    OS or SQLite failure → :class:`StorageIOError`. An :class:`EmbedkdError` is returned unchanged.
    """
    if isinstance(exc, EmbedkdError):
        return exc
    if is_disk_full(exc):
        return StorageFullError(f"{action} failed: the disk is full ({describe(exc)}); free space and retry")
    if is_corrupt(exc):
        return ServiceStateError(
            f"{action} failed: {describe(exc)}; the file is corrupt: stop the service, restore it from a "
            "backup or run `embedkd index --repair`"
        )
    return StorageIOError(f"{action} failed: {describe(exc)}")
