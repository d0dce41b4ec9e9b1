"""Student-teacher fidelity: cosine, MSE and neighbour overlap on hand-checkable vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eval_fakes import student, teacher

from embedkd.errors import EmbedkdError
from embedkd.fidelity import neighbour_overlap, task_fidelity, top_k

QUERIES = ["a b", "c", "f"]
DOCS = ["a b", "c d", "a b c c c c", "e f"]


def test_fidelity_exact_values():
    s, t = student(), teacher()
    fid = task_fidelity(s.encode(QUERIES), s.encode(DOCS), t.encode(QUERIES), t.encode(DOCS), k=1)
    d2 = 1.1 / math.sqrt(2 * 1.01)  # cos((c 1, d .1), (c 1, d 1))
    assert fid["mean_cosine"] == pytest.approx((6 + d2) / 7)
    assert fid["mean_cosine_queries"] == pytest.approx(1.0)
    assert fid["mean_cosine_documents"] == pytest.approx((3 + d2) / 4)
    assert fid["mse"] == pytest.approx((1 - 0.1) ** 2 / (7 * 6))
    # top-1: the student puts d2 first for "c", the teacher d3; q1 and q3 agree
    assert fid["top1_overlap"] == pytest.approx(2 / 3)
    assert fid["texts"] == 7


def test_top_k_and_overlap():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    d = np.array([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.0]])
    assert [sorted(r) for r in top_k(q, d, 2).tolist()] == [[0, 1], [0, 1]]
    assert top_k(q, d, 10).shape == (2, 3)
    assert neighbour_overlap(np.array([[0, 1], [2, 3]]), np.array([[1, 0], [2, 4]])) == pytest.approx(0.75)


def test_dims_must_match():
    with pytest.raises(EmbedkdError, match="dims 2 and 3 differ"):
        task_fidelity(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 3)), np.ones((1, 3)))
