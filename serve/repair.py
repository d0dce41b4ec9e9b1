"""Rebuild an index directory's snapshot from its document store (``embedkd index --repair``).

The document store is the source of truth: it holds every acknowledged document. When the snapshot
is damaged (a corrupt shard, an edited manifest, a garbled ``CURRENT``) or disagrees with the store
(documents with no vector, vectors with no document), the repair builds a new index of exactly the
stored documents, under their own vector ids, and makes it live. Each document's vector comes from,
in order: the write-ahead log, the old snapshot (when it still passes its checksums; flat and hnsw
only, ivfpq codes are lossy), and the teacher through its cache (loaded only when still needed).

The vector-id counter is raised to the largest high-water mark found anywhere (the store's, the old
manifest's, the stored ids), so ids are never reused. A store that is itself missing or damaged
cannot be repaired from: restore it from a backup or rebuild the index from its corpus.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedkd.errors import EmbedkdError
from serve.builder import STORE_FILE
from serve.durability import lock_writer
from serve.errors import StorageIOError
from serve.index import IndexMeta, IndexType, VectorIndex
from serve.snapshot import SNAPSHOTS, current_name, read_meta, read_snapshot, remove_debris, write_snapshot
from serve.store import DocStore, Document, StoredDoc

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepairReport:
    """What a repair did.

    Attributes:
        documents: documents in the store, each now in the index.
        from_log / from_snapshot / from_teacher: where their vectors came from.
        snapshot: the new live snapshot.
        next_vid: the vector-id counter afterwards.
    """

    documents: int
    from_log: int
    from_snapshot: int
    from_teacher: int
    snapshot: str
    next_vid: int


def repair_index(
    index_dir: str | Path,
    teacher=None,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    device: str | None = None,
) -> RepairReport:
    """Rebuild ``index_dir``'s snapshot from its document store and make it live.

    Args:
        index_dir: the index directory (no service may be writing to it).
        teacher: a teacher object, or the model string to load (default: the one the index records);
            loaded only when some document's vector is neither in the log nor in the old snapshot.
        cache_dir: teacher cache root (default ``~/.cache/embedkd/teacher``).
        batch_size: teacher batch size.
        device: torch device for the teacher.

    Raises:
        ServiceStateError: the document store is missing or damaged (nothing to repair from).
        EmbedkdError: a service holds the directory, or the teacher does not fit the index.
    """
    index_dir = Path(index_dir)
    meta = read_meta(index_dir)
    try:
        lock = lock_writer(index_dir)
    except StorageIOError:
        raise
    except EmbedkdError:
        raise EmbedkdError(
            f"{index_dir} is open for writing by a running service; stop it before a repair"
        ) from None
    try:
        store = DocStore(index_dir / STORE_FILE, create=False)
        try:
            return _repair(index_dir, meta, store, teacher, cache_dir, batch_size, device)
        finally:
            store.close()
    finally:
        lock.close()


def _repair(
    index_dir, meta: IndexMeta, store: DocStore, teacher, cache_dir, batch_size, device
) -> RepairReport:
    docs = list(store.iter_docs())
    if not docs and meta.index_type == IndexType.IVFPQ.value:
        raise EmbedkdError(f"{index_dir}: the document store is empty; an ivfpq index needs vectors to train")
    vectors = np.zeros((len(docs), meta.dim), dtype=np.float32)
    have = np.zeros(len(docs), dtype=bool)
    row_of = {d.vid: i for i, d in enumerate(docs)}
    for record in store.records_after(0):
        if record.op == "upsert" and record.vid in row_of:
            vectors[row_of[record.vid]], have[row_of[record.vid]] = record.vector, True
    from_log = int(have.sum())
    from_snapshot = _fill_from_snapshot(index_dir, meta, docs, vectors, have)
    missing = np.flatnonzero(~have)
    if len(missing):
        vectors[missing] = _embed(meta, [docs[i] for i in missing], teacher, cache_dir, batch_size, device)
    index = VectorIndex.create(meta)
    if not index.is_trained:
        index.train(_sample(vectors, int(meta.params.get("train_size", len(vectors)))))
    if docs:
        index.add([d.vid for d in docs], vectors)
    top = max((d.vid for d in docs), default=0) + 1
    next_vid = store.save_vid_counter(max(top, store.next_vid(), _recorded_next_vid(index_dir)))
    applied = store.last_seq()
    name = write_snapshot(index_dir, index, applied, next_vid=next_vid, documents=len(docs), replace=True)
    store.truncate_wal(applied)
    remove_debris(index_dir)
    report = RepairReport(len(docs), from_log, from_snapshot, len(missing), name, next_vid)
    logger.info("repaired %s: %s", index_dir, report)
    return report


def _fill_from_snapshot(index_dir, meta: IndexMeta, docs: list[StoredDoc], vectors, have) -> int:
    """Copy the vectors an old snapshot still holds intact (flat, hnsw); returns how many.

    The live snapshot is tried first, then any other snapshot folder, newest first (``CURRENT`` may be
    the damaged part).
    """
    if meta.index_type == IndexType.IVFPQ.value or have.all():
        return 0
    live = current_name(index_dir, strict=False)
    names = sorted((p.name for p in (index_dir / SNAPSHOTS).glob("snap-*") if p.is_dir()), reverse=True)
    for name in ([live] if live else []) + [n for n in names if n != live]:
        try:
            old = read_snapshot(index_dir, meta, strict_manifest=False, name=name).index
            break
        except EmbedkdError as exc:
            logger.info("snapshot %s is not used (%s)", name, exc)
    else:
        return 0
    held = set(old.ids().tolist())
    n = 0
    for i in np.flatnonzero(~have):
        if docs[i].vid in held:
            vectors[i], have[i] = old.reconstruct(docs[i].vid), True
            n += 1
    return n


def _embed(meta: IndexMeta, docs: list[StoredDoc], teacher, cache_dir, batch_size, device) -> np.ndarray:
    from embedkd.cache import TeacherCache
    from serve.encoders import load_index_teacher

    if teacher is None or isinstance(teacher, str):
        teacher = load_index_teacher(teacher or meta.teacher_name, meta, device=device)
    elif teacher.id != meta.teacher_id or teacher.dim != meta.dim:
        raise EmbedkdError(f"teacher {teacher.id!r} is not the index's teacher {meta.teacher_id!r}")
    logger.info("embedding %d document(s) with %s (through its cache)", len(docs), teacher.id)
    texts = [Document(d.id, d.text, d.title).embed_text for d in docs]
    cache = TeacherCache.for_teacher(teacher, cache_dir)
    return cache.encode(teacher, texts, "document", batch_size=batch_size)


def _recorded_next_vid(index_dir: Path) -> int:
    """The live manifest's vector-id high-water mark, read even from a damaged manifest (1 if none)."""
    name = current_name(index_dir, strict=False)
    try:
        value = json.loads((index_dir / SNAPSHOTS / str(name) / "manifest.json").read_bytes()).get("next_vid")
    except (OSError, ValueError, AttributeError):
        return 1
    return value if isinstance(value, int) else 1


def _sample(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    if size >= len(vectors):
        return vectors
    return vectors[sorted(random.Random(seed).sample(range(len(vectors)), size))]
