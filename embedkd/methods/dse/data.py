"""Sentence-pair data: readers for tsv / csv / jsonl and the STS-B, MRPC and SNLI (SentEval) files.

Every source becomes a :class:`PairSet`: two text columns and one float label per pair, validated for
one :class:`PairTask` in one place (:func:`parse_labels`). Labels are

* ``regression``: a similarity in ``[0, 1]`` (the STS-B reader divides its 0-5 scores by 5);
* ``binary``: ``0`` or ``1``;
* ``nli``: a class id in :data:`NLI_LABELS` order, written as the name (``entailment``) or its id.

A source without a label column gives unlabeled pairs (``NaN`` labels) that only a teacher scores.

Example::

    pairs = load_pairs("../shared/data/sts-benchmark/sts-train.csv", task="regression")
    pairs.a[0], pairs.b[0], pairs.labels[0]
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from embedkd.errors import ConfigError, EmbedkdError

logger = logging.getLogger(__name__)

# HF/GLUE order (SNLI, MNLI datasets), so numeric labels from those datasets mean the same here.
NLI_LABELS = ("entailment", "neutral", "contradiction")
TEXT_COLUMN_PAIRS = (
    ("sentence1", "sentence2"),
    ("text1", "text2"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("anchor", "positive"),
)
LABEL_COLUMNS = ("label", "score", "gold_label", "similarity")


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


def _open(path: Path) -> io.TextIOBase:
    # utf-8-sig drops the BOM the MRPC files start with.
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace")
    return path.open("r", encoding="utf-8-sig", errors="replace", newline="")


def _first_line(path: Path) -> str:
    with _open(path) as f:
        return f.readline().rstrip("\r\n")


def detect_format(path: str | Path) -> str:
    """Name the pair format of ``path``: ``stsb``, ``mrpc``, ``snli``, ``tsv``, ``csv`` or ``jsonl``."""
    path = Path(path)
    if path.is_dir() or path.name.split(".")[0] in ("s1", "s2", "labels"):
        return "snli"
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1].lstrip(".") if suffixes else ""
    first = _first_line(path)
    if first.startswith("Quality\t"):
        return "mrpc"
    fields = first.split("\t")
    if kind == "csv" and len(fields) >= 7 and _is_float(fields[4]):
        return "stsb"
    if kind in ("tsv", "csv", "jsonl", "json"):
        return "jsonl" if kind == "json" else kind
    raise EmbedkdError(
        f"unsupported pair file {path.name!r}; use tsv, csv or jsonl with two text columns and a label, "
        "or the STS-B csv, MRPC txt or SNLI s1/s2/labels files"
    )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_pair_rows(
    path: str | Path, text_columns: Sequence[str] | None = None, label_column: str | None = None
) -> Iterator[RawPair]:
    """Yield the raw pairs of one source, in file order.

    Args:
        path: a pair file, or an SNLI SentEval ``s1.<split>`` file (or a folder with one split).
        text_columns: the two text columns of tsv/csv/jsonl (default: the first of
            :data:`TEXT_COLUMN_PAIRS` present).
        label_column: label column of tsv/csv/jsonl (default: the first of :data:`LABEL_COLUMNS` present;
            none present means unlabeled pairs).
    """
    path = Path(path)
    if not path.exists():
        raise EmbedkdError(f"pair data {path} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise EmbedkdError(f"pair data file {path} is empty")
    fmt = detect_format(path)
    if fmt == "stsb":
        yield from _read_stsb(path)
    elif fmt == "mrpc":
        yield from _read_mrpc(path)
    elif fmt == "snli":
        yield from _read_senteval(path)
    elif fmt == "jsonl":
        yield from _read_jsonl(path, text_columns, label_column)
    else:
        yield from _read_table(path, "\t" if fmt == "tsv" else ",", text_columns, label_column)


def _read_stsb(path: Path) -> Iterator[RawPair]:
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 7:
                raise EmbedkdError(f"{path}:{n}: expected 7 tab-separated STS-B fields, got {len(fields)}")
            score = float(fields[4]) if _is_float(fields[4]) else fields[4]
            if isinstance(score, float) and not 0.0 <= score <= 5.0:
                raise EmbedkdError(f"{path}:{n}: STS-B score {fields[4]} is outside 0-5")
            label = score / 5.0 if isinstance(score, float) else score
            yield RawPair(fields[5], fields[6], label, f"{path}:{n}")


def _read_mrpc(path: Path) -> Iterator[RawPair]:
    with _open(path) as f:
        next(f)
        for n, line in enumerate(f, 2):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 5:
                raise EmbedkdError(f"{path}:{n}: expected 5 tab-separated MRPC fields, got {len(fields)}")
            yield RawPair(fields[3], fields[4], fields[0], f"{path}:{n}")


def _read_senteval(path: Path) -> Iterator[RawPair]:
    if path.is_dir():
        splits = sorted(p.suffix for p in path.glob("s1.*"))
        if len(splits) != 1:
            raise EmbedkdError(
                f"{path} holds {len(splits)} SentEval splits ({', '.join(splits) or 'none'}); "
                "name one file, e.g. s1.dev"
            )
        split = splits[0]
        path = path / f"s1{split}"
    folder, split = path.parent, path.suffix
    files = [folder / f"{name}{split}" for name in ("s1", "s2", "labels")]
    missing = [str(p) for p in files[:2] if not p.exists()]
    if missing:
        raise EmbedkdError(f"SentEval pair files missing: {', '.join(missing)}")
    columns = [p.read_text(encoding="utf-8").splitlines() if p.exists() else None for p in files]
    s1, s2, labels = columns
    if len(s1) != len(s2) or (labels is not None and len(labels) != len(s1)):
        raise EmbedkdError(
            f"{folder}: s1{split}, s2{split} and labels{split} have different line counts "
            f"({len(s1)}, {len(s2)}, {len(labels) if labels is not None else '-'})"
        )
    for i, (a, b) in enumerate(zip(s1, s2)):
        yield RawPair(a, b, labels[i] if labels is not None else None, f"{folder / ('s1' + split)}:{i + 1}")


def _pick_columns(
    names: Sequence[str], text_columns: Sequence[str] | None, label_column: str | None, path: Path
) -> tuple[str, str, str | None]:
    if text_columns is not None:
        if len(text_columns) != 2:
            raise ConfigError(f"text_columns must name two columns, got {list(text_columns)}")
        pair = tuple(text_columns)
    else:
        pair = next((p for p in TEXT_COLUMN_PAIRS if p[0] in names and p[1] in names), None)
    if pair is None or any(c not in names for c in pair):
        raise EmbedkdError(
            f"{path} has no text columns {list(pair) if pair else 'sentence1/sentence2'}; "
            f"columns are {list(names)} (use --text-columns A B)"
        )
    if label_column is not None and label_column not in names:
        raise EmbedkdError(f"{path} has no label column {label_column!r}; columns are {list(names)}")
    label = label_column or next((c for c in LABEL_COLUMNS if c in names), None)
    return pair[0], pair[1], label


def _read_table(
    path: Path, delimiter: str, text_columns: Sequence[str] | None, label_column: str | None
) -> Iterator[RawPair]:
    with _open(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames:
            raise EmbedkdError(f"pair file {path} has no header row")
        col_a, col_b, col_label = _pick_columns(reader.fieldnames, text_columns, label_column, path)
        for n, row in enumerate(reader, 2):
            label = row.get(col_label) if col_label else None
            if col_label and label is None:
                label = ""
            yield RawPair(row.get(col_a) or "", row.get(col_b) or "", label, f"{path}:{n}")


def _read_jsonl(
    path: Path, text_columns: Sequence[str] | None, label_column: str | None
) -> Iterator[RawPair]:
    with _open(path) as f:
        columns: tuple[str, str, str | None] | None = None
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise EmbedkdError(f"{path}:{n}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise EmbedkdError(f"{path}:{n}: expected a JSON object per line")
            if columns is None:
                columns = _pick_columns(list(row), text_columns, label_column, path)
            col_a, col_b, col_label = columns
            label = row.get(col_label, "") if col_label else None
            yield RawPair(str(row.get(col_a) or ""), str(row.get(col_b) or ""), label, f"{path}:{n}")


def _label_kind(value: object) -> str:
    """``number`` or ``name``: what a raw label is written as."""
    return "number" if isinstance(value, (int, float)) or _is_float(str(value).strip()) else "name"


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


def load_pairs(
    paths: str | Path | Sequence[str | Path],
    task: PairTask | str,
    *,
    max_samples: int | None = None,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
) -> PairSet:
    """Read and validate sentence pairs from one or more sources.

    Args:
        paths: pair file(s); formats as :func:`detect_format` names them.
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
    a, b = [], []
    for pair in raw:
        first, second = " ".join(pair.a.split()), " ".join(pair.b.split())
        if not first or not second:
            side = "first" if not first else "second"
            raise EmbedkdError(f"{pair.where}: the {side} text of the pair is missing")
        a.append(first)
        b.append(second)
    labels = parse_labels(raw, task)
    pairs = PairSet(tuple(a), tuple(b), labels, task, tuple(str(p) for p in paths)).head(max_samples)
    logger.info(
        "pairs: %d from %s (%d labeled, task %s)",
        len(pairs),
        ", ".join(map(str, paths)),
        int(pairs.labeled.sum()),
        task.value,
    )
    return pairs
