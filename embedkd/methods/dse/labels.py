"""Pair tasks and their labels: what a label means for each task, validated in one place.

Labels are

* ``regression``: a similarity in ``[0, 1]`` (the STS-B reader divides its 0-5 scores by 5);
* ``binary``: ``0`` or ``1``;
* ``nli``: a class id in :data:`NLI_LABELS` order, written as the name (``entailment``) or its id.

A source without a label column gives unlabeled pairs (``NaN`` labels) that only a teacher scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from embedkd.errors import ConfigError, EmbedkdError

# HF/GLUE order (SNLI, MNLI datasets), so numeric labels from those datasets mean the same here.
NLI_LABELS = ("entailment", "neutral", "contradiction")


class PairTask(str, Enum):
    """What a pair label means, and so how many logits a model outputs for it."""

    REGRESSION = "regression"
    BINARY = "binary"
    NLI = "nli"

    @property
    def num_outputs(self) -> int:
        """Logits per pair: 1 for regression and binary, 3 for NLI."""
        return 3 if self is PairTask.NLI else 1

    @classmethod
    def parse(cls, value: str | PairTask) -> PairTask:
        """The task named ``value``; raises :class:`ConfigError` naming the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(
                f"unknown pair task {value!r}; choose one of {', '.join(t.value for t in cls)}"
            ) from None


@dataclass(frozen=True)
class RawPair:
    """One pair as read, before label validation; ``where`` is ``file:line`` for error messages."""

    a: str
    b: str
    label: object  # str | int | float | bool | None (None: the source has no labels)
    where: str


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a float (a numeric label or an STS-B score column)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_kind(value: object) -> str:
    """``number`` or ``name``: what a raw label is written as."""
    return "number" if isinstance(value, (int, float)) or is_number(str(value).strip()) else "name"


def parse_labels(raw: Sequence[RawPair], task: PairTask | str) -> np.ndarray:
    """Validate the raw labels of ``raw`` for ``task``; the one place pair labels are checked.

    Returns:
        float32 ``(n,)`` labels (``NaN`` for pairs read without a label column).

    Raises:
        EmbedkdError: a label is empty, outside the task's range, or labels mix numbers and names.
    """
    task = PairTask.parse(task)
    out = np.full(len(raw), np.nan, dtype=np.float32)
    kinds: dict[str, str] = {}
    for i, pair in enumerate(raw):
        if pair.label is None:
            continue
        text = str(pair.label).strip()
        if text == "":
            raise EmbedkdError(
                f"{pair.where}: empty label (drop the label column altogether for unlabeled pairs)"
            )
        kind = _label_kind(pair.label)
        kinds.setdefault(kind, pair.where)
        if len(kinds) > 1:
            raise EmbedkdError(
                f"mixed label types: numbers (first at {kinds['number']}) and names "
                f"(first at {kinds['name']}); write every label the same way"
            )
        out[i] = _label_value(pair, text, kind, task)
    return out


def _label_value(pair: RawPair, text: str, kind: str, task: PairTask) -> float:
    if task is PairTask.NLI:
        if kind == "name":
            name = text.lower()
            if name not in NLI_LABELS:
                raise EmbedkdError(f"{pair.where}: NLI label {text!r} is not one of {', '.join(NLI_LABELS)}")
            return float(NLI_LABELS.index(name))
        value = float(text)
        if value not in (0.0, 1.0, 2.0):
            raise EmbedkdError(
                f"{pair.where}: NLI label {text} is outside the task's range; expected 0, 1, 2 "
                f"({', '.join(NLI_LABELS)}) or the names"
            )
        return value
    if kind == "name":
        raise EmbedkdError(
            f"{pair.where}: label {text!r} is not a number; --task {task.value} needs "
            + ("0 or 1" if task is PairTask.BINARY else "a similarity in [0, 1]")
        )
    value = float(text)
    if task is PairTask.BINARY and value not in (0.0, 1.0):
        raise EmbedkdError(f"{pair.where}: binary label {text} is outside the task's range; expected 0 or 1")
    if task is PairTask.REGRESSION and not (0.0 <= value <= 1.0 and math.isfinite(value)):
        raise EmbedkdError(
            f"{pair.where}: regression label {text} is outside the task's range [0, 1] "
            "(scale scores first, e.g. STS 0-5 scores divided by 5)"
        )
    return value
