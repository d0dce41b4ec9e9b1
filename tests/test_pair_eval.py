"""Pair metrics: exact values on hand-made logits."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.errors import EmbedkdError
from embedkd.methods.dse.data import PairSet
from embedkd.methods.dse.labels import PairTask
from embedkd.methods.dse.metrics import evaluate_pairs, pair_metrics, relative_drop


def test_spearman_with_ties_matches_scipy():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 50) / 5.0  # many ties, like STS-B
    logits = (labels + rng.normal(0, 0.3, 50)).reshape(-1, 1)
    got = pair_metrics(logits, labels, "regression")
    assert got["spearman"] == pytest.approx(100 * spearmanr(logits[:, 0], labels)[0], abs=1e-9)
    assert got["pearson"] == pytest.approx(100 * pearsonr(logits[:, 0], labels)[0], abs=1e-9)
    assert got["n"] == 50


def test_binary_accuracy_and_f1_at_logit_zero():
    logits = np.array([[2.0], [-1.0], [0.5], [-3.0], [0.1]])
    labels = np.array([1.0, 1.0, 0.0, 0.0, 1.0])
    got = pair_metrics(logits, labels, "binary")
    # predictions 1,0,1,0,1: tp=2, fp=1, fn=1 -> precision 2/3, recall 2/3
    assert got["accuracy"] == pytest.approx(60.0)
    assert got["f1"] == pytest.approx(100 * 2 / 3)


def test_nli_accuracy_skips_unlabelled():
    logits = np.array([[3.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    labels = np.array([0.0, 2.0, 2.0, np.nan])
    got = pair_metrics(logits, labels, PairTask.NLI)
    assert got == {"n": 3, "accuracy": pytest.approx(100 * 2 / 3)}
    with pytest.raises(EmbedkdError, match="no labelled pairs"):
        pair_metrics(logits[:1], np.array([np.nan]), "nli")


def test_evaluate_pairs_calls_score_pairs():
    class Fake:
        def score_pairs(self, a, b, *, batch_size=32, show_progress=False):
            return np.array([[len(x) - len(y)] for x, y in zip(a, b)], dtype=np.float32)

    pairs = PairSet(("aaa", "a"), ("a", "aaa"), np.array([1.0, 0.0], np.float32), PairTask.BINARY)
    got = evaluate_pairs(Fake(), pairs)
    assert got["accuracy"] == 100.0 and got["f1"] == 100.0 and "seconds" in got
    assert relative_drop(80.0, 76.0) == pytest.approx(5.0)
