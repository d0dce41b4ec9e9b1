"""How closely a student reproduces its teacher on a task's own texts.

* ``mean_cosine``: mean cosine between student and teacher vectors of the same text (queries embedded
  as queries, documents as documents); also split per side.
* ``mse``: mean squared error per component between the raw vectors (what LEAF minimises).
* ``top10_overlap``: for each query, the share of the teacher-space top-10 documents (teacher queries
  against teacher documents) that the student-space top-10 (student against student) also returns.
"""

from __future__ import annotations

import numpy as np

from embedkd.errors import EmbedkdError


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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


def fidelity(
    student_queries: np.ndarray,
    student_documents: np.ndarray,
    teacher_queries: np.ndarray,
    teacher_documents: np.ndarray,
    *,
    k: int = 10,
) -> dict[str, float]:
    """Fidelity of a student to its teacher on one task (see the module docstring).

    Raises:
        EmbedkdError: student and teacher dimensions differ (they are not in one space).
    """
    if student_queries.shape[1] != teacher_queries.shape[1]:
        raise EmbedkdError(
            f"fidelity needs student and teacher in one space: dims {student_queries.shape[1]} "
            f"and {teacher_queries.shape[1]} differ"
        )
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
