"""Pair-task metrics: Spearman for similarity (STS-B), accuracy/F1 for paraphrase (MRPC), accuracy for NLI.

Works on anything with ``score_pairs(a, b) -> (n, k) logits``: a
:class:`~embedkd.methods.dse.teacher.CrossEncoderTeacher`, a :class:`~embedkd.methods.dse.student.DSEStudent`.
``embedkd eval`` can call :func:`evaluate_pairs` for its pair tasks.

Example::

    pairs = load_sentence_pairs("sts-test.csv", "regression")
    evaluate_pairs(load_dse_student("runs/dse-stsb"), pairs)   # {'spearman': 84.1, 'pearson': ..., 'n': 1379}
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import numpy as np

from embedkd.errors import EmbedkdError
from embedkd.methods.dse.data import PairSet
from embedkd.methods.dse.labels import PairTask

logger = logging.getLogger(__name__)

MAIN_METRIC = {PairTask.REGRESSION: "spearman", PairTask.BINARY: "accuracy", PairTask.NLI: "accuracy"}


class PairScorer(Protocol):
    def score_pairs(self, a, b, *, batch_size: int = 32, show_progress: bool = False) -> np.ndarray: ...


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's rho needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end - 1) / 2.0
            start = end
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def pair_metrics(logits: np.ndarray, labels: np.ndarray, task: PairTask | str) -> dict[str, float]:
    """Metrics (in %, like GLUE) of ``(n, k)`` logits against gold labels.

    Regression: Spearman and Pearson of the logit (sigmoid is monotone, so Spearman is the same on
    probabilities). Binary: accuracy and F1 of the positive class, predicting 1 when the logit > 0.
    NLI: accuracy of the arg-max over the 3 logits.
    """
    task = PairTask.parse(task)
    logits = np.asarray(logits, dtype=np.float64).reshape(len(labels), -1)
    labels = np.asarray(labels, dtype=np.float64)
    keep = ~np.isnan(labels)
    if not keep.any():
        raise EmbedkdError("no labelled pairs to evaluate")
    logits, labels = logits[keep], labels[keep]
    out: dict[str, float] = {"n": int(len(labels))}
    if task is PairTask.REGRESSION:
        out["spearman"] = 100 * _pearson(_ranks(logits[:, 0]), _ranks(labels))
        out["pearson"] = 100 * _pearson(logits[:, 0], labels)
    elif task is PairTask.BINARY:
        pred = (logits[:, 0] > 0).astype(np.float64)
        tp = float(((pred == 1) & (labels == 1)).sum())
        precision = tp / max(pred.sum(), 1.0)
        recall = tp / max(labels.sum(), 1.0)
        out["accuracy"] = 100 * float((pred == labels).mean())
        out["f1"] = 100 * float(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    else:
        out["accuracy"] = 100 * float((logits.argmax(axis=1) == labels).mean())
    return out


def evaluate_pairs(scorer: PairScorer, pairs: PairSet, *, batch_size: int = 32) -> dict[str, float]:
    """Score ``pairs`` with ``scorer`` and return :func:`pair_metrics` plus ``seconds``."""
    start = time.perf_counter()
    logits = scorer.score_pairs(pairs.a, pairs.b, batch_size=batch_size)
    metrics = pair_metrics(logits, pairs.labels, pairs.task)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    logger.info("pair eval (%s, %d pairs): %s", pairs.task.value, len(pairs), metrics)
    return metrics


def relative_drop(teacher: float, student: float) -> float:
    """Relative degradation of ``student`` against ``teacher``, in % (positive: worse)."""
    return 100.0 * (teacher - student) / teacher
