"""Teacher-vector cache: the teacher never embeds the same text twice.

Vectors live on disk under ``<root>/<teacher-digest>/``, keyed by a hash of teacher id + prompt + text.
Work is written in chunks as it is done; each chunk is two ``.npy`` files (keys, vectors) made valid
by a small JSON commit record (count, shapes, sha256 of both) written last through an atomic rename.
A process killed mid-way therefore keeps every finished chunk, and on load:

* chunks without a commit record (killed before commit) are reported and ignored;
* a chunk whose files do not match their record (truncated, edited) is a :class:`CacheError`;
* a directory made for another teacher or dimension is a :class:`CacheError`.

Example::

    cache = TeacherCache.for_teacher(teacher)
    vectors = cache.encode(teacher, texts, role="document", show_progress=True)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedkd.encoders import check_role
from embedkd.errors import EmbedkdError
from embedkd.hub import cache_root

if TYPE_CHECKING:
    from embedkd.teachers import Teacher

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEY_BYTES = 16


class CacheError(EmbedkdError):
    """The cache on disk is corrupt or belongs to another teacher."""


def text_key(teacher_id: str, prompt: str, text: str) -> bytes:
    """16-byte key of one (teacher, prompt, text)."""
    return hashlib.sha256(f"{teacher_id}\0{prompt}\0{text}".encode()).digest()[:KEY_BYTES]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


class TeacherCache:
    """Append-only, chunked store of one teacher's vectors.

    Args:
        directory: the cache directory of this teacher.
        teacher_id: identity of the teacher (checked against the directory's ``meta.json``).
        dim: vector dimension (checked likewise).
        chunk_size: texts per committed chunk (the most work a kill can lose).
    """

    def __init__(self, directory: str | Path, teacher_id: str, dim: int, *, chunk_size: int = 128) -> None:
        self.dir = Path(directory)
        self.teacher_id, self.dim, self.chunk_size = teacher_id, int(dim), chunk_size
        self._index: dict[bytes, tuple[int, int]] = {}
        self._chunks: list[np.ndarray] = []
        self._chunk_names: list[str] = []
        self._chunk_keys: list[
            list[bytes]
        ] = []  # each chunk's keys in row order (deletion needs no disk read)
        self._loaded: set[str] = set()
        self._open()

    @classmethod
    def for_teacher(cls, teacher: Teacher, root: str | Path | None = None, **kwargs) -> TeacherCache:
        """The cache of ``teacher`` under ``root`` (default ``~/.cache/embedkd/teacher``)."""
        root = Path(root) if root else cache_root() / "teacher"
        digest = hashlib.sha256(teacher.id.encode()).hexdigest()[:16]
        return cls(root / digest, teacher.id, teacher.dim, **kwargs)

    def __len__(self) -> int:
        return len(self._index)

    def _open(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create cache directory {self.dir}: {exc}") from exc
        meta_path = self.dir / "meta.json"
        meta = {"format": FORMAT_VERSION, "teacher_id": self.teacher_id, "dim": self.dim}
        if meta_path.exists():
            try:
                found = json.loads(meta_path.read_text())
            except (OSError, ValueError) as exc:
                raise CacheError(
                    f"cache {self.dir} has an unreadable meta.json ({exc}); delete the directory"
                ) from exc
            if not isinstance(found, dict):
                raise CacheError(f"cache {self.dir} has a malformed meta.json; delete the directory")
            if found != meta:
                raise CacheError(
                    f"cache {self.dir} belongs to {found.get('teacher_id')!r} (dim {found.get('dim')}), "
                    f"not {self.teacher_id!r} (dim {self.dim}); use another --cache-dir"
                )
        else:
            _atomic_write(meta_path, json.dumps(meta))
        self.refresh()
        committed = {r.stem for r in self.dir.glob("chunk-*.json")}
        orphans = {p.name.split(".")[0] for p in self.dir.glob("chunk-*.npy")} - committed
        if orphans:
            logger.warning(
                "cache %s: ignoring %d uncommitted chunk(s) from an interrupted run", self.dir, len(orphans)
            )
        if self._index:
            logger.info("teacher cache %s: %d vectors", self.dir, len(self._index))

    def refresh(self) -> int:
        """Load chunks committed since the last look (by this or another process); returns how many.

        Several processes may fill one cache at once (torchrun ranks, a benchmark beside a warm-up job);
        each picks up the others' work before embedding, so no text is embedded twice for long.
        """
        new = [r for r in sorted(self.dir.glob("chunk-*.json")) if r.stem not in self._loaded]
        for record in new:
            self._load_chunk(record)
        return len(new)

    def _load_chunk(self, record_path: Path) -> None:
        name = record_path.stem
        self._loaded.add(name)
        try:
            record = json.loads(record_path.read_text())
            keys_path, vecs_path = self.dir / f"{name}.keys.npy", self.dir / f"{name}.vecs.npy"
            for path, field in ((keys_path, "keys_sha256"), (vecs_path, "vecs_sha256")):
                if _sha256_file(path) != record[field]:
                    raise CacheError(
                        f"cache chunk {path} does not match its checksum (truncated or modified); "
                        f"delete {self.dir / name}.* to recompute just that chunk"
                    )
            keys = np.load(keys_path)
            vecs = np.load(vecs_path, mmap_mode="r")
            count = int(record["count"])
        except CacheError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(
                f"cache chunk {record_path} is unreadable ({exc}); delete {self.dir / name}.*"
            ) from exc
        if vecs.shape != (count, self.dim) or keys.shape != (count, KEY_BYTES):
            raise CacheError(
                f"cache chunk {record_path} has shape {vecs.shape}, expected ({count}, {self.dim})"
            )
        self._append_chunk(name, [k.tobytes() for k in keys], vecs)

    def get(self, keys: Sequence[bytes]) -> np.ndarray:
        """Vectors for ``keys`` (all must be present)."""
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            chunk, row = self._index[key]
            out[i] = self._chunks[chunk][row]
        return out

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Commit one chunk of vectors (atomic: either all of it is kept, or none)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise CacheError(f"teacher returned shape {vectors.shape}, expected ({len(keys)}, {self.dim})")
        if not np.isfinite(vectors).all():
            raise EmbedkdError("teacher returned non-finite values (NaN/inf); refusing to cache them")
        name = f"chunk-{time.time_ns():020d}-{os.getpid()}"
        keys_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        keys_path, vecs_path = self.dir / f"{name}.keys.npy", self.dir / f"{name}.vecs.npy"
        np.save(keys_path, keys_arr)
        np.save(vecs_path, vectors)
        for path in (keys_path, vecs_path):
            with path.open("rb") as f:
                os.fsync(f.fileno())
        record = {
            "count": len(keys),
            "keys_sha256": _sha256_file(keys_path),
            "vecs_sha256": _sha256_file(vecs_path),
        }
        _atomic_write(self.dir / f"{name}.json", json.dumps(record))
        self._loaded.add(name)
        self._append_chunk(name, list(keys), vectors)

    def _append_chunk(self, name: str, keys: list[bytes], vectors: np.ndarray) -> None:
        chunk_no = len(self._chunks)
        self._chunks.append(vectors)
        self._chunk_names.append(name)
        self._chunk_keys.append(keys)
        for row, key in enumerate(keys):
            self._index[key] = (chunk_no, row)

    def delete(self, keys: Sequence[bytes]) -> int:
        """Remove the vectors of ``keys`` from disk and memory; returns how many were cached.

        Each chunk holding one of them is rewritten without it: the remaining rows are committed as a
        new chunk first, then the old chunk's commit record is removed (which invalidates it), then its
        files. A kill in between leaves either both chunks (the deletion is simply not done) or orphan
        files that loading ignores. Other processes that loaded the old chunk keep it until they reopen.
        """
        wanted = set(keys)
        present = [k for k in wanted if k in self._index]
        for chunk, name in enumerate(list(self._chunk_names)):
            # every loaded chunk, not only those the index points at: a key may be in two
            chunk_keys = self._chunk_keys[chunk]
            if not chunk_keys or wanted.isdisjoint(chunk_keys):
                continue
            rows = [r for r, key in enumerate(chunk_keys) if key not in wanted]
            if len(rows) == len(chunk_keys):
                continue
            if rows:
                self.add([chunk_keys[r] for r in rows], np.asarray(self._chunks[chunk])[rows])
            for suffix in (".json", ".keys.npy", ".vecs.npy"):  # the commit record first
                (self.dir / f"{name}{suffix}").unlink(missing_ok=True)
            self._chunks[chunk] = np.empty((0, self.dim), dtype=np.float32)
            self._chunk_keys[chunk] = []
        for key in present:
            del self._index[key]
        if present:
            logger.info("cache %s: deleted %d vector(s)", self.dir, len(present))
        return len(present)

    def missing(
        self, teacher: Teacher, texts: Sequence[str], role: str | None = "document"
    ) -> tuple[list[bytes], dict[bytes, str]]:
        """The cache keys of ``texts``, and the texts not cached yet (key → text, each text once).

        Chunks that other processes committed meanwhile are loaded first, so their texts are not missing.
        Engines that embed elsewhere (:mod:`embedkd.engines`) send only the missing texts and commit each
        finished chunk with :meth:`add`.
        """
        role = check_role(role)
        if teacher.id != self.teacher_id:
            raise CacheError(f"cache {self.dir} is for {self.teacher_id!r}, not {teacher.id!r}")
        self.refresh()
        prompt = teacher.prompt(role)
        keys = [text_key(self.teacher_id, prompt, t) for t in texts]
        todo: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in self._index and key not in todo:
                todo[key] = text
        return keys, todo

    def encode(
        self,
        teacher: Teacher,
        texts: Sequence[str],
        role: str | None = "document",
        *,
        batch_size: int = 32,
        show_progress: bool = False,
        by_length: bool = True,
    ) -> np.ndarray:
        """Vectors of ``texts`` from the cache, asking ``teacher`` only for those it lacks.

        ``role`` is ``query`` or ``document``; a symmetric input (None) shares the document vectors.
        With ``by_length`` (default) the missing texts go to the teacher longest first, so that each
        batch holds texts of about one length and pads little (the teacher sorts only within the
        ``chunk_size`` texts of one call); the vectors come back in the order of ``texts`` either way.
        """
        from tqdm.auto import tqdm

        keys, todo = self.missing(teacher, texts, role)
        if todo:
            logger.info(
                "teacher %s: embedding %d new texts (%d cached)",
                self.teacher_id,
                len(todo),
                len(texts) - len(todo),
            )
            pending = list(todo.items())
            if by_length:
                pending.sort(key=lambda item: len(item[1]), reverse=True)
            with tqdm(
                total=len(pending),
                desc=f"teacher {'queries' if role == 'query' else 'documents'}",
                unit="text",
                disable=not show_progress,
            ) as bar:
                while pending:
                    if self.refresh():  # another process may have embedded some of these meanwhile
                        done = [p for p in pending if p[0] in self._index]
                        pending = [p for p in pending if p[0] not in self._index]
                        bar.update(len(done))
                    part, pending = pending[: self.chunk_size], pending[self.chunk_size :]
                    if not part:
                        break
                    vecs = teacher.encode([t for _, t in part], role, batch_size=batch_size)
                    self.add([k for k, _ in part], vecs)
                    bar.update(len(part))
        return self.get(keys)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cached_encode(
    teacher: Teacher,
    texts: Sequence[str],
    role: str | None = "document",
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed ``texts`` with ``teacher`` through its on-disk cache (one call does it all)."""
    return TeacherCache.for_teacher(teacher, cache_dir).encode(
        teacher, texts, role, batch_size=batch_size, show_progress=show_progress
    )
