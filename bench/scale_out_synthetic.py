"""The synthetic 100k collection of ``bench/scale_out.py``: build time and recall@10 of FAISS and Milvus Lite.

The collection is made from numpy alone (the teacher never runs on it): each vector is a random SciFact
document vector plus Gaussian noise, L2-normalised (:func:`synthetic_vectors`). Queries are SciFact test
queries encoded by the query encoder; the exact top-10 (inner product over all vectors, numpy) is the truth
that each approximate index is scored against.

* FAISS: a :class:`serve.index.VectorIndex` per index type, with the parameters ``serve/index.py`` picks
  for 100k vectors (:func:`faiss_collection`).
* Milvus Lite: one :class:`serve.milvus_store.MilvusStore` collection, upserted once and flushed into sealed
  segments, then indexed as each type in turn (:func:`milvus_collection`). A search before the flush and
  index build would scan the growing segment exhaustively and say nothing about the index.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench.scale_out")

FAISS_TYPES = ("flat", "hnsw", "ivfpq")
MILVUS_TYPES = ("flat", "hnsw", "ivf_flat", "ivf_sq8")
TIMED_QUERIES = 50  # queries searched one at a time for the per-query search time
POLYSEMOUS_NOTE = (
    "FAISS ivfpq is built with do_polysemous_training=False: serve/index.py's index_factory IVF-PQ leaves "
    "FAISS's default (True), whose code reordering is only used by polysemous search (never used here) and "
    "took ~300 s of a 5,000-vector, 7-bit build on this machine (far more at 8 bits); codes, distances and "
    "recall are the same without it"
)


def synthetic_vectors(base: np.ndarray, n: int, sigma: float, seed: int) -> np.ndarray:
    """``n`` unit vectors, each a random row of ``base`` plus N(0, sigma²) noise per dimension, renormalised."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(base), size=n)
    vecs = base[rows] + rng.normal(0.0, sigma, size=(n, base.shape[1])).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.ascontiguousarray(vecs, dtype=np.float32)


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the exact top-``k`` by inner product, per query (blocks keep memory small)."""
    out = []
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ vectors.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out)


def recall_at_k(found: list[list[int]], truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the index returned in its top-k."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def _per_query_ms(search_one: Callable[[np.ndarray], object], queries: np.ndarray) -> dict:
    """Median and p99 milliseconds of searching one query at a time (the first ``TIMED_QUERIES``)."""
    for q in queries[:5]:
        search_one(q[None, :])
    times = []
    for q in queries[:TIMED_QUERIES]:
        t0 = time.perf_counter()
        search_one(q[None, :])
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "search_p50_ms": round(statistics.median(times), 3),
        "search_p99_ms": round(float(np.percentile(times, 99)), 3),
    }


# ----------------------------------------------------------------------------------------------- FAISS
def _faiss_meta(kind: str, n: int, dim: int):
    from serve.index import IndexMeta, IndexSpec, hnsw_params, ivfpq_params

    spec = IndexSpec(index_type=kind)
    params = {"flat": {}, "hnsw": hnsw_params(n, spec)}.get(kind)
    if params is None:
        params = ivfpq_params(n, dim, spec)
    return IndexMeta(
        teacher_id="synthetic", teacher_name="synthetic", dim=dim, index_type=kind, params=params
    )


def faiss_one(kind: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, seed: int) -> dict:
    """Build one FAISS index type from numpy (timed), then its recall@k and per-query search time."""
    import faiss

    from serve.index import VectorIndex

    meta = _faiss_meta(kind, len(vectors), vectors.shape[1])
    started = time.perf_counter()
    index = VectorIndex.create(meta)
    if kind == "ivfpq":  # see POLYSEMOUS_NOTE: same codes and recall, minutes less to build
        for shard in index.shards:
            faiss.downcast_index(faiss.extract_index_ivf(shard)).do_polysemous_training = False
    if not index.is_trained:
        rows = np.random.default_rng(seed).choice(len(vectors), meta.params["train_size"], replace=False)
        index.train(vectors[np.sort(rows)])
    index.add(np.arange(len(vectors)), vectors)
    build_s = time.perf_counter() - started
    k = truth.shape[1]
    found = [[i for i, _ in row] for row in index.search(queries, k)]
    record = {
        "build_s": round(build_s, 2),
        "recall10": round(recall_at_k(found, truth), 4),
        "params": meta.params | ({"polysemous_training": False} if kind == "ivfpq" else {}),
        **_per_query_ms(lambda q: index.search(q, k), queries),
    }
    logger.info("FAISS %s, %d vectors: %s", kind, len(vectors), record)
    return record


# ---------------------------------------------------------------------------------------------- Milvus
def _identity(dim: int):
    from serve.vector_store import TeacherIdentity

    return TeacherIdentity(teacher_id="synthetic", teacher_name="synthetic", dim=dim)


def _docs(n: int):
    from serve.store import Document

    return [Document(f"s{i}", f"synthetic {i}") for i in range(n)]


def milvus_load(uri: Path, vectors: np.ndarray, collection: str) -> dict:
    """A fresh Milvus Lite collection at ``uri`` holding ``vectors`` (FLAT index), flushed; timed."""
    from serve.milvus_store import MilvusStore

    shutil.rmtree(uri, ignore_errors=True)
    uri.unlink(missing_ok=True)
    docs = _docs(len(vectors))
    started = time.perf_counter()
    store = MilvusStore.open(
        str(uri), _identity(vectors.shape[1]), collection=collection, request_timeout=900
    )
    try:
        for start in range(0, len(docs), 10_000):
            store.upsert(docs[start : start + 10_000], vectors[start : start + 10_000])
        upsert_s = time.perf_counter() - started
        store.flush()
        flushed_s = time.perf_counter() - started
        count = store.count()
    finally:
        store.close()
    if count != len(vectors):
        raise RuntimeError(f"Milvus holds {count} of the {len(vectors)} vectors upserted")
    record = {"upsert_s": round(upsert_s, 2), "upsert_flush_s": round(flushed_s, 2), "count": count}
    logger.info("Milvus Lite load, %d vectors: %s", len(vectors), record)
    return record


def milvus_one(
    kind: str, uri: Path, collection: str, queries: np.ndarray, truth: np.ndarray, dim: int
) -> dict:
    """(Re)build the flushed collection's index as ``kind`` (timed, until loaded), then recall@k and timing."""
    from serve.milvus_index import MilvusIndexType as T
    from serve.milvus_index import build_params
    from serve.milvus_store import MilvusStore

    store = MilvusStore.open(str(uri), _identity(dim), collection=collection, request_timeout=900)
    try:
        started = time.perf_counter()
        store.build_index(kind)  # release, drop, create, load: load builds every sealed segment's index
        build_s = time.perf_counter() - started
        info = store._client.describe_index(collection, "vector")
        k = truth.shape[1]
        hits = store.search(queries, k, include_text=False)
        found = [[int(h.doc_id[1:]) for h in row] for row in hits]
        record = {
            "index_build_s": round(build_s, 2),
            "recall10": round(recall_at_k(found, truth), 4),
            "params": build_params(T.parse(kind), dim),
            "index_state": {key: info.get(key) for key in ("index_type", "indexed_rows", "total_rows")},
            **_per_query_ms(lambda q: store.search(q, k, include_text=False), queries),
        }
    finally:
        store.close()
    logger.info("Milvus Lite %s: %s", kind, record)
    return record
