"""Atomic, checksummed index snapshots and the index directory's ``meta.json``.

An index directory holds::

    meta.json                 IndexMeta (which teacher, dim, normalisation, prompts, index type)
    docs.sqlite               documents + write-ahead log (serve.store)
    snapshots/CURRENT         name of the live snapshot
    snapshots/snap-<seq>/     shard-000.faiss ... + manifest.json (applied_seq, sizes, sha256)

A snapshot is written into a temporary folder, fsynced, renamed into place, and only then made live
by atomically replacing ``CURRENT``; a crash at any point leaves the previous snapshot live and
intact. ``applied_seq`` is the last write-ahead record the snapshot contains: start-up replays the
records after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import faiss

from embedkd.errors import EmbedkdError
from serve.index import IndexMeta, IndexType, VectorIndex

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
SNAPSHOTS = "snapshots"
CURRENT = "CURRENT"


@dataclass(frozen=True)
class Snapshot:
    """A loaded snapshot: the index and the last write-ahead sequence number it contains."""

    index: VectorIndex
    applied_seq: int
    name: str


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename (all or nothing)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_meta(index_dir: Path, meta: IndexMeta) -> None:
    atomic_write_bytes(Path(index_dir) / META_FILE, json.dumps(meta.to_dict(), indent=2).encode())


def read_meta(index_dir: str | Path) -> IndexMeta:
    """The index directory's meta; a clear error when it is not an index directory or is unreadable."""
    path = Path(index_dir) / META_FILE
    if not Path(index_dir).is_dir():
        raise EmbedkdError(f"index directory {index_dir} does not exist (build it with `embedkd index`)")
    if not path.exists():
        raise EmbedkdError(f"{index_dir} is not an embedkd index directory (no {META_FILE})")
    try:
        return IndexMeta.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise EmbedkdError(f"{path} is corrupt ({exc})") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def write_snapshot(index_dir: str | Path, index: VectorIndex, applied_seq: int) -> str:
    """Snapshot ``index`` (holding records up to ``applied_seq``) and make it live; returns its name."""
    root = Path(index_dir) / SNAPSHOTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"snap-{applied_seq:012d}"
    if current_name(index_dir) == name:
        return name
    blobs = index.serialize_shards()
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = []
    for i, blob in enumerate(blobs):
        path = tmp / f"shard-{i:03d}.faiss"
        with path.open("wb") as f:
            f.write(memoryview(blob))
            f.flush()
            os.fsync(f.fileno())
        files.append({"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)})
    manifest = {"applied_seq": applied_seq, "ntotal": index.ntotal, "files": files}
    atomic_write_bytes(tmp / "manifest.json", json.dumps(manifest, indent=2).encode())
    final = root / name
    shutil.rmtree(final, ignore_errors=True)  # a half-made one from a crash before CURRENT moved
    os.rename(tmp, final)
    fsync_dir(root)
    atomic_write_bytes(root / CURRENT, name.encode())
    _remove_stale(root, keep=name)
    logger.info("snapshot %s: %d vectors", name, index.ntotal)
    return name


def _remove_stale(root: Path, keep: str) -> None:
    for path in root.iterdir():
        if path.is_dir() and path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def current_name(index_dir: str | Path) -> str | None:
    path = Path(index_dir) / SNAPSHOTS / CURRENT
    return path.read_text().strip() if path.exists() else None


def read_snapshot(
    index_dir: str | Path, meta: IndexMeta, *, mmap: bool = False, verify: bool = True
) -> Snapshot:
    """Load the live snapshot (checksums verified); ``mmap`` maps shards read-only instead of reading.

    Raises:
        EmbedkdError: no snapshot, or a snapshot file is missing, truncated or modified.
    """
    name = current_name(index_dir)
    if name is None:
        raise EmbedkdError(f"{index_dir} has no index snapshot (interrupted `embedkd index`? build it again)")
    folder = Path(index_dir) / SNAPSHOTS / name
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise EmbedkdError(f"snapshot {folder} is unreadable ({exc})") from exc
    shards = []
    for entry in manifest["files"]:
        path = folder / entry["file"]
        if not path.exists() or path.stat().st_size != entry["bytes"]:
            raise EmbedkdError(f"index file {path} is missing or truncated; rebuild the index")
        if verify and _sha256(path) != entry["sha256"]:
            raise EmbedkdError(f"index file {path} does not match its checksum (corrupt); rebuild the index")
        shards.append(_read_shard(path, IndexType(meta.index_type), mmap))
    index = VectorIndex.from_shards(meta, shards)
    logger.info("loaded snapshot %s: %d vectors%s", name, index.ntotal, " (mmap)" if mmap else "")
    return Snapshot(index=index, applied_seq=int(manifest["applied_seq"]), name=name)


def _read_shard(path: Path, kind: IndexType, mmap: bool) -> faiss.Index:
    if not mmap:
        return faiss.read_index(str(path))
    flags = (
        faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if kind is IndexType.IVFPQ else faiss.IO_FLAG_MMAP_IFC
    )
    return faiss.read_index(str(path), flags)


def empty_like(meta: IndexMeta) -> VectorIndex:
    """A flat in-memory index with ``meta``'s dimension and normalisation (a delta over a mapped one)."""
    flat = IndexMeta(**{**meta.to_dict(), "index_type": IndexType.FLAT.value, "shards": 1, "params": {}})
    return VectorIndex.create(flat)
