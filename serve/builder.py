"""Build an index directory from a corpus: the teacher embeds every document (through its cache).

The vectors and documents go into the directory (FAISS + SQLite, an :class:`IndexSpec`) or into a
Milvus collection (a :class:`~serve.milvus_build.MilvusSpec`; the directory then holds ``meta.json``
naming it). The directory is built under a temporary name next to the target and renamed into place at
the end, so an interrupted build never leaves a half-made index where the service would look for one.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedkd.errors import EmbedkdError
from serve.index import IndexMeta, IndexSpec, IndexType, VectorIndex, hnsw_params, ivfpq_params
from serve.milvus_build import MilvusSpec, check_target, fill_collection, milvus_meta
from serve.snapshot import write_meta, write_snapshot
from serve.store import DocStore, Document
from serve.store_config import write_index_meta
from serve.vector_store import TeacherIdentity

if TYPE_CHECKING:
    from embedkd.teachers import Teacher

logger = logging.getLogger(__name__)

STORE_FILE = "docs.sqlite"


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _iter_jsonl(path: Path) -> Iterator[Document]:
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = row.get("_id", row.get("id"))
                text = row["text"]
            except (ValueError, KeyError, AttributeError) as exc:
                raise EmbedkdError(f"{path}:{n} is not a JSON object with an id and a text ({exc})") from exc
            if doc_id is None:
                raise EmbedkdError(f"{path}:{n} has no '_id' or 'id' field")
            metadata = row.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise EmbedkdError(f"{path}:{n}: 'metadata' must be an object, got {type(metadata).__name__}")
            yield Document(str(doc_id), str(text or ""), row.get("title") or None, metadata)


def read_corpus(path: str | Path, max_docs: int | None = None) -> list[Document]:
    """Documents with ids from a BEIR folder (``corpus.jsonl[.gz]``), a ``.jsonl[.gz]`` file
    (``_id``/``id``, ``text``, optional ``title`` and ``metadata``) or a ``.txt`` file (one document
    per line, id = line number).

    Raises:
        EmbedkdError: missing/unsupported source, duplicate ids, or no non-empty document.
    """
    path = Path(path)
    if not path.exists():
        raise EmbedkdError(f"corpus {path} does not exist")
    if path.is_dir():
        found = [path / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (path / n).exists()]
        if not found:
            raise EmbedkdError(
                f"folder {path} has no corpus.jsonl or corpus.jsonl.gz (a BEIR folder is expected)"
            )
        rows: Iterator[Document] = _iter_jsonl(found[0])
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        rows = _iter_jsonl(path)
    elif path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        rows = (Document(str(i), line) for i, line in enumerate(lines, 1))
    else:
        raise EmbedkdError(f"unsupported corpus {path.name!r}; use a BEIR folder, .jsonl[.gz] or .txt")
    docs, seen, empty = [], set(), 0
    for doc in rows:
        if not doc.embed_text.strip():
            empty += 1
            continue
        if doc.id in seen:
            raise EmbedkdError(f"corpus {path} has the document id {doc.id!r} twice")
        seen.add(doc.id)
        docs.append(doc)
        if max_docs and len(docs) >= max_docs:
            break
    if empty:
        logger.warning("corpus %s: skipped %d empty documents", path, empty)
    if not docs:
        raise EmbedkdError(f"corpus {path} has no non-empty document")
    return docs


def build_index(
    corpus: str | Path,
    teacher: Teacher,
    index_dir: str | Path,
    spec: IndexSpec | MilvusSpec | None = None,
    *,
    teacher_name: str | None = None,
    normalize: bool = True,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    max_docs: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
) -> IndexMeta:
    """Embed ``corpus`` with ``teacher`` (cached) into a new index directory ``index_dir``.

    Args:
        corpus: see :func:`read_corpus`.
        teacher: an :class:`embedkd.teachers.Teacher`.
        index_dir: target directory (must not exist unless ``overwrite``).
        spec: a FAISS :class:`IndexSpec` (index type and parameters; unset ones are chosen from the
            corpus size) or a :class:`~serve.milvus_build.MilvusSpec` (URI, collection, index type),
            whose target is checked before the teacher embeds anything.
        teacher_name: the model string to record (default: the teacher's ``name`` or ``id``).
        normalize: L2-normalise vectors so that scores are cosine similarities.
        cache_dir: teacher cache root (default ``~/.cache/embedkd/teacher``).
        engine: where the teacher runs: ``local`` (this process) or ``ray`` (Ray Data actors, see
            :mod:`embedkd.engines`); both fill the same cache.
        ray_address: Ray cluster address for ``engine="ray"`` (None: a Ray cluster on this machine).

    Returns:
        The recorded :class:`IndexMeta`.
    """
    from embedkd.cache import TeacherCache
    from embedkd.engines import make_engine

    _check_target_dir(Path(index_dir), overwrite)
    docs = read_corpus(corpus, max_docs)
    meta = teacher_meta(teacher, teacher_name, normalize)
    if isinstance(spec, MilvusSpec):  # unreachable, another teacher's, existing: before any teacher work
        check_target(spec, TeacherIdentity.from_meta(meta), overwrite=overwrite)
    logger.info("indexing %d documents from %s with teacher %s", len(docs), corpus, teacher.id)
    cache = TeacherCache.for_teacher(teacher, cache_dir)
    texts = [d.embed_text for d in docs]
    with make_engine(engine, address=ray_address) as runner:
        vectors = runner.encode(
            cache, teacher, texts, "document", batch_size=batch_size, show_progress=show_progress
        )
    return index_from_vectors(
        docs, vectors, meta, index_dir, spec, overwrite=overwrite, show_progress=show_progress
    )


def index_from_vectors(
    docs: Sequence[Document],
    vectors: np.ndarray,
    meta: IndexMeta,
    index_dir: str | Path,
    spec: IndexSpec | MilvusSpec | None = None,
    *,
    overwrite: bool = False,
    show_progress: bool = True,
) -> IndexMeta:
    """Write an index directory for ``docs`` whose teacher ``vectors`` are already computed.

    Args:
        docs: the documents (:func:`read_corpus`), in the order of ``vectors``.
        vectors: ``(len(docs), meta.dim)`` teacher vectors (normalised here when ``meta.normalize``).
        meta: the teacher's identity: :func:`teacher_meta`, or ``read_meta`` of another index built by
            the same teacher; its index type and parameters are replaced by ``spec``'s.
        index_dir, spec, overwrite, show_progress: as :func:`build_index`.

    Returns:
        The recorded :class:`IndexMeta`.
    """
    spec = spec or IndexSpec()
    target = Path(index_dir)
    _check_target_dir(target, overwrite)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (len(docs), meta.dim):
        raise EmbedkdError(
            f"{len(docs)} documents of {meta.dim}-d need vectors of that shape, got {vectors.shape}"
        )
    if isinstance(spec, MilvusSpec):
        identity = TeacherIdentity.from_meta(meta)
        params = fill_collection(
            spec, docs, vectors, identity, overwrite=overwrite, show_progress=show_progress
        )
        meta = milvus_meta(meta, spec, params)
        _build_dir(target, lambda folder: write_index_meta(folder, meta, spec.store_config()))
    else:
        meta = _faiss_meta(meta, spec, len(docs))
        _build_dir(target, lambda folder: _write_index_dir(folder, list(docs), vectors, meta, spec.seed))
    logger.info("index %s: %d vectors (%s)", target, len(docs), meta.index_type)
    return meta


def _check_target_dir(target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise EmbedkdError(f"index directory {target} already exists (pass --overwrite to replace it)")


def _build_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder next to ``target`` and rename it into place (all or nothing)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        _move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_index_dir(
    folder: Path, docs: list[Document], vectors: np.ndarray, meta: IndexMeta, seed: int
) -> None:
    """Fill ``folder``: the documents, the trained index holding ``vectors``, its meta and first snapshot."""
    store = DocStore(folder / STORE_FILE)
    records = store.upsert(docs, vectors, log=False)
    store.close()
    index = VectorIndex.create(meta)
    if not index.is_trained:
        index.train(_sample(vectors, meta.params["train_size"], seed))
    index.add([r.vid for r in records], vectors)
    write_meta(folder, meta)
    write_snapshot(folder, index, applied_seq=0)


def teacher_meta(teacher: Teacher, teacher_name: str | None = None, normalize: bool = True) -> IndexMeta:
    """The :class:`IndexMeta` of an index of ``teacher``'s vectors (a flat index until a spec says more).

    Args:
        teacher: the document teacher.
        teacher_name: the model string to record (default: the teacher's ``name`` or ``id``).
        normalize: L2-normalise vectors so that scores are cosine similarities.
    """
    model = getattr(teacher, "model", None)
    return IndexMeta(
        teacher_id=teacher.id,
        teacher_name=teacher_name or getattr(teacher, "name", teacher.id),
        dim=int(teacher.dim),
        normalize=normalize,
        teacher_normalize=bool(getattr(teacher, "normalize", False)),
        query_prompt=teacher.prompt("query"),
        document_prompt=teacher.prompt("document"),
        teacher_max_seq_length=getattr(model, "max_seq_length", None),
    )


def _faiss_meta(meta: IndexMeta, spec: IndexSpec, n: int) -> IndexMeta:
    kind = IndexType(spec.index_type)
    params = {IndexType.FLAT: {}, IndexType.HNSW: hnsw_params(n, spec)}.get(kind)
    if params is None:
        params = ivfpq_params(n, meta.dim, spec)
    return replace(meta, index_type=kind.value, shards=spec.shards, params=params)


def _sample(vectors: np.ndarray, size: int, seed: int) -> np.ndarray:
    if size >= len(vectors):
        return vectors
    rows = sorted(random.Random(seed).sample(range(len(vectors)), size))
    return vectors[rows]


def _move_into_place(tmp: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
