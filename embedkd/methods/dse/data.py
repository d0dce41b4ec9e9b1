"""Sentence pairs for DSE: :class:`PairSet` and :func:`load_sentence_pairs`, the one way pairs are read.

Every source (tsv / csv / jsonl, STS-B, MRPC, SNLI; see :mod:`embedkd.methods.dse.readers`) becomes a
:class:`PairSet`: two text columns and one float label per pair, validated for one
:class:`~embedkd.methods.dse.labels.PairTask` (:func:`~embedkd.methods.dse.labels.parse_labels`).

Example::

    pairs = load_sentence_pairs("../shared/data/sts-benchmark/sts-train.csv", task="regression")
    pairs.a[0], pairs.b[0], pairs.labels[0]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedkd.errors import EmbedkdError
from embedkd.methods.dse.labels import PairTask, RawPair, parse_labels
from embedkd.methods.dse.readers import read_pair_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairSet:
    """Validated pairs of one task.

    Attributes:
        a: first texts.
        b: second texts.
        labels: float32 ``(n,)``; ``NaN`` marks an unlabeled pair (teacher-only).
        task: the task the labels were validated for.
        sources: the files read.
    """

    a: tuple[str, ...]
    b: tuple[str, ...]
    labels: np.ndarray
    task: PairTask
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.a)

    @property
    def labeled(self) -> np.ndarray:
        """Boolean mask of the pairs that carry a label."""
        return ~np.isnan(self.labels)

    def head(self, n: int | None) -> PairSet:
        """The first ``n`` pairs (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return PairSet(self.a[:n], self.b[:n], self.labels[:n], self.task, self.sources)


def load_sentence_pairs(
    paths: str | Path | Sequence[str | Path],
    task: PairTask | str,
    *,
    max_samples: int | None = None,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
) -> PairSet:
    """Read and validate sentence pairs from one or more sources.

    Args:
        paths: pair file(s); formats as :func:`~embedkd.methods.dse.readers.detect_format` names them.
        task: ``regression``, ``binary`` or ``nli``.
        max_samples: keep the first this many pairs.
        text_columns: the two text columns for tsv/csv/jsonl.
        label_column: the label column for tsv/csv/jsonl.

    Raises:
        EmbedkdError: a source is missing or empty, a pair has a missing side, or a label is invalid.
    """
    task = PairTask.parse(task)
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise EmbedkdError("no pair data given")
    raw: list[RawPair] = []
    for path in paths:
        rows = list(read_pair_rows(path, text_columns, label_column))
        if not rows:
            raise EmbedkdError(f"pair data {path} holds no pairs")
        raw.extend(rows)
    a, b = _clean_texts(raw)
    labels = parse_labels(raw, task)
    pairs = PairSet(a, b, labels, task, tuple(str(p) for p in paths)).head(max_samples)
    logger.info(
        "pairs: %d from %s (%d labeled, task %s)",
        len(pairs),
        ", ".join(map(str, paths)),
        int(pairs.labeled.sum()),
        task.value,
    )
    return pairs


def _clean_texts(raw: Sequence[RawPair]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Both sides with whitespace collapsed; a pair with an empty side is an error naming its line."""
    a, b = [], []
    for pair in raw:
        first, second = " ".join(pair.a.split()), " ".join(pair.b.split())
        if not first or not second:
            side = "first" if not first else "second"
            raise EmbedkdError(f"{pair.where}: the {side} text of the pair is missing")
        a.append(first)
        b.append(second)
    return tuple(a), tuple(b)
