"""Sentence-pair readers: tsv / csv / jsonl and the STS-B, MRPC and SNLI (SentEval) files.

Every reader yields :class:`~embedkd.methods.dse.labels.RawPair` rows in file order; the labels are
validated afterwards, for one task, by :func:`~embedkd.methods.dse.labels.parse_labels`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.dse.labels import RawPair, is_number

TEXT_COLUMN_PAIRS = (
    ("sentence1", "sentence2"),
    ("text1", "text2"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("anchor", "positive"),
)
LABEL_COLUMNS = ("label", "score", "gold_label", "similarity")


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
    if kind == "csv" and len(fields) >= 7 and is_number(fields[4]):
        return "stsb"
    if kind in ("tsv", "csv", "jsonl", "json"):
        return "jsonl" if kind == "json" else kind
    raise EmbedkdError(
        f"unsupported pair file {path.name!r}; use tsv, csv or jsonl with two text columns and a label, "
        "or the STS-B csv, MRPC txt or SNLI s1/s2/labels files"
    )


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
            score = float(fields[4]) if is_number(fields[4]) else fields[4]
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
