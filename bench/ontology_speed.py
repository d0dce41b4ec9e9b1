"""Search latency at scale for ``ontology_iu.py``: exhaustive Tversky vs the student + FAISS, per query.

The corpus is ``n_docs`` synthetic reports resampled from the evaluation reports (their concept sets
and student vectors). Set comparison is timed on the first ``n_exact`` of them and scaled linearly
(exhaustive scoring is one score per document); FAISS flat and HNSW run on all ``n_docs``.
"""

from __future__ import annotations

import time

import numpy as np
from ontology_common import K

HNSW = {"M": 32, "efConstruction": 80, "efSearch": 64}  # what `embedkd index --index-type hnsw` builds


def _per_query(fn, items) -> float:
    """Mean seconds of ``fn(item)`` over ``items``."""
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - t0) / len(items)


def time_sets(sim, extractor, profiles, queries: list[str], n_exact: int) -> tuple[float, float]:
    """Seconds per query: exhaustive Tversky over ``profiles[:n_exact]``, and the inverted index."""
    from embedkd.ontology import SetIndex, exhaustive_search

    exhaustive = _per_query(
        lambda q: exhaustive_search(sim, extractor.extract(q), profiles[:n_exact], k=K), queries
    )
    inv = SetIndex(sim, profiles[:n_exact])
    inverted = _per_query(lambda q: inv.search(extractor.extract(q), k=K), queries)
    return exhaustive, inverted


def time_student(student, index, queries: list[str]) -> tuple[list[np.ndarray], float, float]:
    """Query vectors, and seconds per query of encoding and of a flat search.

    Encoding and search are timed in separate loops (interleaving them measured no different here).
    """
    student.encode(queries[:2])  # warm-up
    qvecs, enc = [], 0.0
    for q in queries:
        t0 = time.perf_counter()
        qvecs.append(student.encode([q], normalize_embeddings=True, convert_to_numpy=True).astype(np.float32))
        enc += time.perf_counter() - t0
    search = _per_query(lambda v: index.search(v, K), qvecs)
    return qvecs, enc / len(queries), search


def time_hnsw(vecs: np.ndarray, flat, qvecs: list[np.ndarray]) -> dict:
    """Build an HNSW graph over ``vecs``, time its searches and score its recall against ``flat``.

    Recall is scored on similarity values, because the resampled corpus holds many exact duplicates
    (tied scores): a hit counts when it scores at least the exact search's 10th best.
    """
    import faiss

    hnsw = faiss.IndexHNSWFlat(vecs.shape[1], HNSW["M"], faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW["efConstruction"]
    t0 = time.perf_counter()
    hnsw.add(vecs)
    build = time.perf_counter() - t0
    hnsw.hnsw.efSearch = HNSW["efSearch"]
    search, hits = 0.0, []
    for v in qvecs:
        exact_scores, _ = flat.search(v, K)
        t0 = time.perf_counter()
        scores, _ = hnsw.search(v, K)
        search += time.perf_counter() - t0
        hits.append(float(np.mean(scores[0] >= exact_scores[0, -1] - 1e-6)))
    return {"search": search / len(qvecs), "build": build, "recall": float(np.mean(hits))}


def speed_at_scale(sim, extractor, profiles, student_vecs, student, texts, query_ids, n_docs, n_exact, seed):
    """Per-query latency at ``n_docs`` synthetic reports: exhaustive Tversky vs student + FAISS."""
    import faiss

    pick = np.random.default_rng(seed).integers(0, len(profiles), size=n_docs)
    big_profiles = [profiles[i] for i in pick]
    vecs = student_vecs[pick].astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True).clip(1e-12)
    flat = faiss.IndexFlatIP(vecs.shape[1])
    flat.add(vecs)
    qs = [texts[q] for q in query_ids]
    exhaustive_exact, inverted = time_sets(sim, extractor, big_profiles, qs, n_exact)
    exhaustive = exhaustive_exact * n_docs / n_exact
    qvecs, enc, search = time_student(student, flat, qs)
    hnsw = time_hnsw(vecs, flat, qvecs)
    return {
        "n_docs": n_docs,
        "queries": len(qs),
        "exhaustive_measured_docs": n_exact,
        "exhaustive_s_per_query_measured": exhaustive_exact,
        "exhaustive_s_per_query": exhaustive,
        "inverted_index_docs": n_exact,
        "inverted_index_s_per_query": inverted,
        "student_encode_s_per_query": enc,
        "faiss_flat_search_s_per_query": search,
        "speedup_end_to_end": exhaustive / (enc + search),
        "speedup_search_only": exhaustive / search,
        "hnsw_search_s_per_query": hnsw["search"],
        "hnsw_build_s": hnsw["build"],
        "hnsw_recall_at_10_vs_flat": hnsw["recall"],
        "hnsw_params": dict(HNSW),
        "speedup_end_to_end_hnsw": exhaustive / (enc + hnsw["search"]),
        "note": f"exhaustive set comparison timed on {n_exact:,} documents and extrapolated linearly to "
        f"{n_docs:,}; inverted index timed on {n_exact:,}; student + FAISS flat timed at {n_docs:,}; batch-1 "
        "queries, query encoding/extraction included (encoding and search timed in separate loops); HNSW recall scored on similarity values (the "
        "resampled corpus has tied duplicates); machine shared with other jobs",
    }
