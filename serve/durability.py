"""The service's hold on its index directory: the writer lock, a verified load, and when to snapshot.

Snapshots are an optimisation (a shorter replay), never what makes a write durable: the write-ahead
log in the document store does that. So a failed snapshot (a full disk) is logged and retried later,
the writes it would have covered stay acknowledged, and a writer that restarts on a full disk replays
the log without snapshotting and carries on.
"""

from __future__ import annotations

import fcntl
import logging
import time
from pathlib import Path
from typing import IO

from embedkd.errors import EmbedkdError
from serve.errors import ServiceStateError, StorageIOError
from serve.faults import describe
from serve.index import IndexMeta
from serve.snapshot import Snapshot, current_name, read_snapshot, remove_debris
from serve.store import DocStore
from serve.verify import Verified, verify_state

logger = logging.getLogger(__name__)

WRITER_LOCK = "writer.lock"


def lock_writer(index_dir: Path) -> IO:
    """Hold an exclusive lock on the directory: one writer at a time (released by the OS if it dies).

    Raises:
        EmbedkdError: another process holds it.
        StorageIOError: the directory is not writable (read-only filesystem, permissions).
    """
    try:
        handle = (index_dir / WRITER_LOCK).open("a")
    except OSError as exc:
        raise StorageIOError(
            f"cannot write to index directory {index_dir} ({describe(exc)}); serve it with --read-only, "
            "or make it writable"
        ) from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise EmbedkdError(
            f"{index_dir} is already open for writing by another process; start this one with --read-only"
        ) from None
    return handle


def load_verified(
    index_dir: Path, meta: IndexMeta, store: DocStore, *, mmap: bool, writer: bool, verify: bool = True
) -> tuple[Snapshot, Verified | None]:
    """The live snapshot, checked against ``store`` (:func:`serve.verify.verify_state`) unless not ``verify``.

    The writer first clears what failed or interrupted snapshots left behind. A reader retries when the
    writer replaced the snapshot meanwhile (its log truncation can race the reader's look at the store).

    Raises:
        ServiceStateError: the snapshot is damaged or disagrees with the store.
    """
    if writer:
        removed = remove_debris(index_dir)
        if removed:
            logger.info("removed %d leftover(s) of interrupted snapshots in %s", removed, index_dir)
    for attempt in range(3):
        snap = read_snapshot(index_dir, meta, mmap=mmap)
        if not verify:
            return snap, None
        try:
            return snap, verify_state(index_dir, snap, store)
        except ServiceStateError:
            if writer or attempt == 2 or current_name(index_dir) == snap.name:
                raise
            logger.info("snapshot %s was replaced while checking it; checking the new one", snap.name)
    raise AssertionError("unreachable")


class SnapshotPolicy:
    """When to snapshot: every ``every`` writes (0: only at shutdown), not sooner than ``retry_seconds``
    after a failure. :attr:`error` says why the last attempt failed (``None`` after a success)."""

    def __init__(self, every: int, retry_seconds: float) -> None:
        self.every, self.retry_seconds = every, retry_seconds
        self.pending = 0
        self.error: str | None = None
        self._retry_at = 0.0

    def wrote(self, n: int) -> None:
        self.pending += n

    def due(self) -> bool:
        return bool(self.every) and self.pending >= self.every and time.monotonic() >= self._retry_at

    def succeeded(self) -> None:
        self.pending, self.error, self._retry_at = 0, None, 0.0

    def failed(self, exc: Exception) -> None:
        self.error = str(exc)
        self._retry_at = time.monotonic() + self.retry_seconds
        logger.warning(
            "index snapshot failed (%s); acknowledged writes stay safe in the write-ahead log; "
            "retrying in %.0f s",
            exc,
            self.retry_seconds,
        )
