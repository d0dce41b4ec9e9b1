"""Start-up verification: the index snapshot, the write-ahead log and the document store must agree.

Each of them can be damaged or replaced on its own (an emptied ``docs.sqlite``, a lost ``-wal`` file, a
restored backup, an edited manifest), and every such case used to start a service that answered wrong
or empty results without a word. :func:`verify_state` checks, before anything is served:

- the store is not empty while the snapshot holds documents;
- the store has issued every write-ahead record the snapshot claims to hold (``applied_seq``), and the
  records after it are all there, without gaps;
- the store's vector-id counter is above every id the snapshot holds (so no id is ever handed out twice);
- the snapshot's ids plus the replayed records are exactly the stored documents' vector ids (for hnsw,
  which cannot remove vectors, they contain them), and the document counts add up.

A disagreement is one :class:`~serve.errors.ServiceStateError` saying what is wrong and how to recover.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve.errors import ServiceStateError
from serve.index import IndexType
from serve.snapshot import Snapshot
from serve.store import DocStore, StoreState

logger = logging.getLogger(__name__)

_RESTORE = "restore docs.sqlite (with its -wal file) from a backup"


@dataclass(frozen=True)
class Verified:
    """What verification found: the store's counts and the snapshot's, all in agreement.

    Attributes:
        documents: documents in the store.
        replay: write-ahead records after the snapshot (to replay).
        next_vid: the next vector id (above every id the snapshot and the store hold).
    """

    documents: int
    replay: int
    next_vid: int


def verify_state(index_dir: Path, snap: Snapshot, store: DocStore) -> Verified:
    """Check ``snap`` and ``store`` against each other (see the module docstring).

    Raises:
        ServiceStateError: they disagree; the message says how, and how to recover.
    """
    state = store.state(snap.applied_seq)
    ids = snap.index.ids()
    repair = f"`embedkd index --repair --index-dir {index_dir}`"
    _check_not_emptied(snap, state, len(ids), store.path)
    _check_log(snap, state, repair)
    _check_vid_counter(snap, state, ids, repair)
    _check_vids(snap, state, ids, repair, store)
    _check_documents(snap, state, repair)
    return Verified(documents=state.count, replay=len(state.wal_after), next_vid=state.next_vid)


def _check_not_emptied(snap: Snapshot, state: StoreState, n_ids: int, path: Path) -> None:
    held = snap.documents if snap.documents is not None else n_ids
    if state.count == 0 and not state.wal_after and held > 0:
        raise ServiceStateError(
            f"the document store {path} holds no documents, but index snapshot {snap.name} holds {held}: "
            f"docs.sqlite was emptied or replaced; {_RESTORE}, or rebuild the index from its corpus "
            "(`embedkd index --overwrite`)"
        )


def _check_log(snap: Snapshot, state: StoreState, repair: str) -> None:
    if snap.applied_seq > state.last_seq:
        raise ServiceStateError(
            f"index snapshot {snap.name} holds write-ahead records up to {snap.applied_seq}, but the "
            f"document store has only issued records up to {state.last_seq}: the store is older than the "
            "snapshot (its -wal file was lost, or it was restored from an older backup) or the manifest "
            f"was edited; {_RESTORE}, or run {repair} to rebuild the index from the documents the store has"
        )
    expected = state.last_seq - snap.applied_seq
    seqs = [seq for seq, *_ in state.wal_after]
    if len(seqs) != expected or (seqs and seqs[0] != snap.applied_seq + 1):
        have = f"{len(seqs)} of them, from {seqs[0]}" if seqs else "none of them"
        raise ServiceStateError(
            f"write-ahead records {snap.applied_seq + 1}..{state.last_seq} (after index snapshot "
            f"{snap.name}) are incomplete ({have}): acknowledged writes are missing from the index; "
            f"{_RESTORE}, or run {repair} to rebuild the index from the stored documents"
        )


def _check_vid_counter(snap: Snapshot, state: StoreState, ids: np.ndarray, repair: str) -> None:
    snap_next = max(int(snap.next_vid or 1), int(ids.max()) + 1 if len(ids) else 1)
    if state.next_vid < snap_next:
        raise ServiceStateError(
            f"the document store's vector-id counter ({state.next_vid}) is below index snapshot "
            f"{snap.name}'s ({snap_next}): the store is older than the snapshot, and new documents would "
            f"reuse ids of old ones; {_RESTORE}, or run {repair}"
        )


def _check_vids(snap: Snapshot, state: StoreState, ids: np.ndarray, repair: str, store: DocStore) -> None:
    added = np.array([vid for _, op, vid, _ in state.wal_after if op == "upsert"], dtype=np.int64)
    removed = np.array([old for *_, old in state.wal_after if old is not None], dtype=np.int64)
    live = np.setdiff1d(np.union1d(ids, added), removed)
    no_vector = np.setdiff1d(state.vids, live)
    if len(no_vector):
        doc = store.lookup([int(no_vector[0])], with_text=False).get(int(no_vector[0]))
        example = f"{doc.id!r} (vector id {doc.vid})" if doc else f"vector id {int(no_vector[0])}"
        raise ServiceStateError(
            f"{len(no_vector)} stored document(s) have no vector in index snapshot {snap.name} or the "
            f"write-ahead log, e.g. {example}: searches would never find them; run {repair}"
        )
    hnsw = snap.index.type is IndexType.HNSW  # removal is a no-op there: stale ids stay (and are dropped)
    orphans = np.setdiff1d(live, state.vids)
    if len(orphans) and not hnsw:
        raise ServiceStateError(
            f"{len(orphans)} vector(s) in index snapshot {snap.name} belong to no stored document "
            f"(e.g. vector id {int(orphans[0])}): the document store lost documents the index holds "
            f"(restored from an older backup, or its -wal file lost); {_RESTORE}, or run {repair} to "
            "drop them (those documents stay lost)"
        )


def _check_documents(snap: Snapshot, state: StoreState, repair: str) -> None:
    if snap.documents is None:
        return
    expected = snap.documents
    for _, op, _, old_vid in state.wal_after:
        if op == "delete":
            expected -= 1
        elif old_vid is None:
            expected += 1
    if expected != state.count:
        raise ServiceStateError(
            f"the document store holds {state.count} document(s), but index snapshot {snap.name} "
            f"({snap.documents}) and the write-ahead log after it account for {expected}: the store "
            f"and the index disagree; {_RESTORE}, or run {repair}"
        )
