"""Atomic, checksummed index snapshots and the index directory's ``meta.json``.

An index directory holds::

    meta.json                 IndexMeta (which teacher, dim, normalisation, prompts, index type)
    docs.sqlite               documents + write-ahead log (serve.store)
    snapshots/CURRENT         name of the live snapshot
    snapshots/snap-<seq>/     shard-000.faiss ... + manifest.json

A snapshot is written into a temporary folder, fsynced, renamed into place, and only then made live
by atomically replacing ``CURRENT``; a crash at any point leaves the previous snapshot live and
intact, and a failed one (a full disk) removes what it wrote. ``applied_seq`` is the last write-ahead
record the snapshot contains: start-up replays the records after it.

The manifest (format 2) records ``applied_seq``, ``ntotal``, ``documents`` (live documents then),
``next_vid`` (the vector-id high-water mark then), each shard's size and sha256, and a ``checksum``
over all of that: an edited manifest (a raised ``applied_seq`` would hide acknowledged writes) is
refused at start-up, as are a garbled ``CURRENT`` and a manifest with keys missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import faiss

from embedkd.errors import EmbedkdError
from serve.errors import ServiceStateError, StorageIOError
from serve.faults import describe, storage_error
from serve.index import IndexMeta, IndexType, VectorIndex

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
SNAPSHOTS = "snapshots"
CURRENT = "CURRENT"
MANIFEST_FORMAT = 2
MANIFEST_KEYS = ("format", "applied_seq", "ntotal", "documents", "next_vid", "files", "checksum")
LEGACY_KEYS = ("applied_seq", "ntotal", "files")
REPAIR_HINT = "rebuild the snapshot from the document store with `embedkd index --repair --index-dir {dir}`"
_NAME = re.compile(r"snap-\d{12}(-r\d+)?")  # -r<n>: a repair at the same applied_seq


@dataclass(frozen=True)
class Snapshot:
    """A loaded snapshot: the index and the last write-ahead sequence number it contains.

    ``next_vid`` (the vector-id high-water mark when it was written) and ``documents`` (live documents
    then) are ``None`` for a manifest written before they were recorded.
    """

    index: VectorIndex
    applied_seq: int
    name: str
    next_vid: int | None = None
    documents: int | None = None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename (all or nothing)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
        data = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return IndexMeta.from_dict(data)
    except OSError as exc:
        raise StorageIOError(f"cannot read {path} ({describe(exc)})") from exc
    except (ValueError, TypeError) as exc:
        raise ServiceStateError(f"{path} is corrupt ({exc}); restore it from a backup") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_checksum(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its ``checksum`` (covers ``applied_seq`` too)."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_snapshot(
    index_dir: str | Path,
    index: VectorIndex,
    applied_seq: int,
    *,
    next_vid: int | None = None,
    documents: int | None = None,
    replace: bool = False,
) -> str:
    """Snapshot ``index`` (holding records up to ``applied_seq``) and make it live; returns its name.

    Args:
        index_dir: the index directory.
        index: the vectors.
        applied_seq: the last write-ahead record ``index`` holds.
        next_vid: the document store's vector-id high-water mark (raised to above every id in ``index``).
        documents: live documents at ``applied_seq`` (default: ``index.ntotal``, true of a fresh build).
        replace: write it even when the live snapshot is at ``applied_seq`` already (a repair).

    Raises:
        StorageFullError, StorageIOError: nothing was made live and no temporary file is left behind.
    """
    root = Path(index_dir) / SNAPSHOTS
    name = f"snap-{applied_seq:012d}"
    live = current_name(index_dir, strict=not replace)
    if live is not None and live.startswith(name):
        if not replace:
            return live
        name = f"{name}-r{int(live.partition('-r')[2] or 0) + 1}"
    ids = index.ids()
    top = int(ids.max()) + 1 if len(ids) else 1
    manifest = {
        "format": MANIFEST_FORMAT,
        "applied_seq": int(applied_seq),
        "ntotal": index.ntotal,
        "documents": int(index.ntotal if documents is None else documents),
        "next_vid": max(top, int(next_vid or 1)),
    }
    tmp = root / f".tmp-{name}-{os.getpid()}"
    final = root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        manifest["files"] = [
            _write_shard(tmp / f"shard-{i:03d}.faiss", b) for i, b in enumerate(index.serialize_shards())
        ]
        manifest["checksum"] = manifest_checksum(manifest)
        atomic_write_bytes(tmp / "manifest.json", json.dumps(manifest, indent=2).encode())
        shutil.rmtree(final, ignore_errors=True)  # a half-made one from a crash before CURRENT moved
        os.rename(tmp, final)
        fsync_dir(root)
        atomic_write_bytes(root / CURRENT, name.encode())
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not stay full of our debris
        if current_name(index_dir, strict=False) != name:
            shutil.rmtree(final, ignore_errors=True)
        if isinstance(exc, OSError):
            raise storage_error(exc, f"writing index snapshot {name}") from exc
        raise
    remove_debris(index_dir)
    logger.info("snapshot %s: %d vectors", name, index.ntotal)
    return name


def _write_shard(path: Path, blob) -> dict:
    with path.open("wb") as f:
        f.write(memoryview(blob))
        f.flush()
        os.fsync(f.fileno())
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def remove_debris(index_dir: str | Path) -> int:
    """Delete everything under ``snapshots/`` but ``CURRENT`` and the live snapshot; returns how many.

    Interrupted or failed snapshots leave folders and temporary files; on a full disk they are what
    keeps it full. With ``CURRENT`` missing or damaged only temporary files go. Only the directory's
    single writer may call this.
    """
    root = Path(index_dir) / SNAPSHOTS
    live = current_name(index_dir, strict=False)
    removed = 0
    for path in root.iterdir() if root.is_dir() else ():
        temporary = path.name.startswith(".")
        if path.name == CURRENT or (not temporary and path.name == live):
            continue
        if not temporary and live is None:  # CURRENT is damaged: every snapshot may be the one to keep
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("cannot remove snapshot leftover %s (%s)", path, describe(exc))
            continue
        removed += 1
    return removed


def current_name(index_dir: str | Path, *, strict: bool = True) -> str | None:
    """The live snapshot's name (``None`` when there is none yet).

    Raises:
        ServiceStateError: ``CURRENT`` is unreadable or holds no snapshot name (unless not ``strict``,
            which returns ``None`` instead).
    """
    path = Path(index_dir) / SNAPSHOTS / CURRENT
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if not strict:
            return None
        raise StorageIOError(f"cannot read {path} ({describe(exc)})") from exc
    name = raw.decode("ascii", errors="replace").strip()
    if not _NAME.fullmatch(name):
        if not strict:
            return None
        raise ServiceStateError(
            f"{path} is corrupt (it holds {raw[:40]!r}, not a snapshot name like snap-000000000000); "
            f"{REPAIR_HINT.format(dir=index_dir)}"
        )
    return name


def read_snapshot(
    index_dir: str | Path,
    meta: IndexMeta,
    *,
    mmap: bool = False,
    verify: bool = True,
    strict_manifest: bool = True,
    name: str | None = None,
) -> Snapshot:
    """Load the live snapshot (checksums verified); ``mmap`` maps shards read-only instead of reading.

    ``strict_manifest=False`` (a repair salvaging vectors) accepts a manifest whose own checksum or
    bookkeeping keys are off, as long as each shard still matches its recorded size and sha256.
    ``name`` loads that snapshot folder instead of the live one.

    Raises:
        ServiceStateError: no snapshot, an edited or incomplete manifest, or a snapshot file that is
            missing, truncated or modified.
    """
    name = name or current_name(index_dir)
    if name is None:
        raise ServiceStateError(
            f"{index_dir} has no index snapshot (interrupted `embedkd index`? build it again)"
        )
    folder = Path(index_dir) / SNAPSHOTS / name
    manifest = read_manifest(folder, index_dir, strict=strict_manifest)
    shards = []
    for entry in manifest["files"]:
        path = folder / entry["file"]
        if not path.exists() or path.stat().st_size != entry["bytes"]:
            raise ServiceStateError(
                f"index file {path} is missing or truncated; {REPAIR_HINT.format(dir=index_dir)}"
            )
        if verify and _sha256(path) != entry["sha256"]:
            raise ServiceStateError(
                f"index file {path} does not match its checksum (corrupt); {REPAIR_HINT.format(dir=index_dir)}"
            )
        try:
            shards.append(_read_shard(path, IndexType(meta.index_type), mmap))
        except RuntimeError as exc:  # FAISS refusing the file
            raise ServiceStateError(
                f"index file {path} is unreadable ({str(exc).splitlines()[0]}); {REPAIR_HINT.format(dir=index_dir)}"
            ) from exc
    index = VectorIndex.from_shards(meta, shards)
    logger.info("loaded snapshot %s: %d vectors%s", name, index.ntotal, " (mmap)" if mmap else "")
    return Snapshot(
        index=index,
        applied_seq=int(manifest["applied_seq"]),
        name=name,
        next_vid=manifest.get("next_vid"),
        documents=manifest.get("documents"),
    )


def read_manifest(folder: Path, index_dir: str | Path, *, strict: bool = True) -> dict:
    """The snapshot's manifest, every key present and its checksum matching.

    A manifest without ``format`` and ``checksum`` was written before manifests had them: accepted
    with a warning (start-up verification still checks it against the document store).

    Raises:
        ServiceStateError: unreadable, not JSON, keys missing or of the wrong type, checksum mismatch.
    """
    path = folder / "manifest.json"
    hint = REPAIR_HINT.format(dir=index_dir)
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise ServiceStateError(f"snapshot manifest {path} is unreadable ({describe(exc)}); {hint}") from exc
    if not isinstance(manifest, dict):
        raise ServiceStateError(f"snapshot manifest {path} is not a JSON object; {hint}")
    legacy = "format" not in manifest and "checksum" not in manifest
    want = LEGACY_KEYS if legacy or not strict else MANIFEST_KEYS
    missing = [k for k in want if k not in manifest]
    if missing:
        raise ServiceStateError(f"snapshot manifest {path} lacks key(s) {', '.join(missing)}; {hint}")
    if strict and not legacy and manifest["checksum"] != manifest_checksum(manifest):
        raise ServiceStateError(
            f"snapshot manifest {path} does not match its checksum (edited or corrupt: it says "
            f"applied_seq={manifest.get('applied_seq')!r}); {hint}"
        )
    _check_manifest_types(manifest, path, hint)
    if legacy and strict:
        logger.warning("snapshot manifest %s has no checksum (older format); the next snapshot adds it", path)
    return manifest


def _check_manifest_types(manifest: dict, path: Path, hint: str) -> None:
    ints = [k for k in ("applied_seq", "ntotal", "documents", "next_vid") if k in manifest]
    bad = [k for k in ints if not isinstance(manifest[k], int) or manifest[k] < 0]
    files = manifest["files"]
    if not isinstance(files, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("file"), str)
        and Path(e["file"]).name == e["file"]
        and isinstance(e.get("bytes"), int)
        and isinstance(e.get("sha256"), str)
        for e in files
    ):
        bad.append("files")
    if bad:
        raise ServiceStateError(f"snapshot manifest {path} has invalid {', '.join(bad)}; {hint}")


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
