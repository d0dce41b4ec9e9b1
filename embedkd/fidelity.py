"""How closely a student reproduces its teacher: one implementation for training, ``eval`` and serving.

* :func:`vector_fidelity`: MSE and cosine between matching rows (the student's and the teacher's vector
  of the same text) -- what LEAF minimises and reports on held-out texts.
* :func:`neighbour_overlap` / :func:`top_k`: the share of a query's teacher-space top-k that the
  student-space search also returns -- a signal that tracks retrieval, not only mean cosine.
* :func:`task_fidelity`: both, on one retrieval task's queries and documents (``eval``).
* :class:`FidelityEvaluator`: the held-out check run by the sentence-transformers trainer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from embedkd.errors import EmbedkdError

logger = logging.getLogger(__name__)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _check_same_space(student: np.ndarray, teacher: np.ndarray) -> None:
    if student.shape[1] != teacher.shape[1]:
        raise EmbedkdError(
            f"fidelity needs student and teacher in one space: dims {student.shape[1]} "
            f"and {teacher.shape[1]} differ"
        )


def vector_fidelity(student_vecs: np.ndarray, teacher_vecs: np.ndarray) -> dict[str, float]:
    """MSE (per component), mean and 5th-percentile cosine between matching rows of two matrices.

    Raises:
        EmbedkdError: the two matrices have different dimensions.
    """
    s = np.asarray(student_vecs, dtype=np.float64)
    t = np.asarray(teacher_vecs, dtype=np.float64)
    _check_same_space(s, t)
    cos = np.sum(_unit(s) * _unit(t), axis=1)
    return {
        "mse": float(((s - t) ** 2).mean()),
        "cosine": float(cos.mean()),
        "cosine_p05": float(np.quantile(cos, 0.05)),
    }


def top_k(queries: np.ndarray, documents: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Indices of the ``k`` most cosine-similar documents for each query (unordered within the top k)."""
    q, d = _unit(queries), _unit(documents)
    k = min(k, len(d))
    out = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), chunk):
        sims = q[start : start + chunk] @ d.T
        out[start : start + chunk] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return out


def neighbour_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of common indices between the rows of two top-k index matrices."""
    k = a.shape[1]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a.tolist(), b.tolist())]))


def bank_overlap(student_vecs: np.ndarray, teacher_vecs: np.ndarray, bank: np.ndarray, k: int = 10) -> float:
    """Mean share of each text's teacher-vector top-k in ``bank`` that its student vector also finds.

    ``bank`` holds teacher vectors of other texts (the documents of an index, or cached training
    texts): this is the top-k overlap a search service sees when the student replaces the teacher for
    queries.
    """
    _check_same_space(student_vecs, bank)
    return neighbour_overlap(top_k(student_vecs, bank, k), top_k(teacher_vecs, bank, k))


def task_fidelity(
    student_queries: np.ndarray,
    student_documents: np.ndarray,
    teacher_queries: np.ndarray,
    teacher_documents: np.ndarray,
    *,
    k: int = 10,
) -> dict[str, float]:
    """Fidelity of a student to its teacher on one retrieval task's own texts.

    ``mean_cosine`` covers queries (embedded as queries) and documents (as documents), also split per
    side; ``mse`` is per component over both; ``top{k}_overlap`` compares each query's teacher-space
    top-k (teacher queries against teacher documents) with its student-space top-k.

    Raises:
        EmbedkdError: student and teacher dimensions differ (they are not in one space).
    """
    _check_same_space(student_queries, teacher_queries)
    cos_q = np.sum(_unit(student_queries) * _unit(teacher_queries), axis=1)
    cos_d = np.sum(_unit(student_documents) * _unit(teacher_documents), axis=1)
    sq = np.concatenate(
        [(student_queries - teacher_queries) ** 2, (student_documents - teacher_documents) ** 2]
    )
    overlap = neighbour_overlap(
        top_k(student_queries, student_documents, k), top_k(teacher_queries, teacher_documents, k)
    )
    return {
        "mean_cosine": float(np.concatenate([cos_q, cos_d]).mean()),
        "mean_cosine_queries": float(cos_q.mean()),
        "mean_cosine_documents": float(cos_d.mean()),
        "mse": float(sq.mean()),
        f"top{k}_overlap": overlap,
        "texts": int(len(cos_q) + len(cos_d)),
    }


def write_fidelity(path: str | Path, metrics: dict) -> None:
    """Write ``metrics`` as indented JSON (the student's ``embedkd_fidelity.json``)."""
    Path(path).write_text(json.dumps(metrics, indent=2) + "\n")
