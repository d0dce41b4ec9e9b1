"""Text readers: txt / jsonl / tsv / csv (optionally ``.gz``), BEIR folders, ``datasets`` folders.

Everything becomes a list of unique, non-empty texts; what was dropped is counted and logged, and an
empty result is an error that names the source.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from embedkd.errors import ConfigError, EmbedkdError

logger = logging.getLogger(__name__)

BUILTIN_CORPORA = ("stdlib-docs",)


@dataclass(frozen=True)
class TextStats:
    """What reading did: rows seen, empty rows dropped, duplicates removed, texts kept."""

    rows: int
    empty: int
    duplicates: int
    kept: int


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace")


def _kind(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1].lstrip(".") if suffixes else "txt"


SOURCE_COLUMN = "source"


def iter_rows(
    path: str | Path, column: str | None = None, sources: Collection[str] | None = None
) -> Iterator[str]:
    """Yield raw texts of one source (file, BEIR folder, ``datasets`` folder or builtin corpus).

    Args:
        path: the source.
        column: text column/field of tsv, csv, jsonl and ``datasets`` sources (default ``text``).
        sources: keep only rows whose ``source`` column starts with one of these (tsv, csv, jsonl).
    """
    if sources:
        yield from _iter_sources(Path(path), column or "text", set(sources))
        return
    if str(path) in BUILTIN_CORPORA:
        yield from stdlib_docs_texts()
        return
    path = Path(path)
    if not path.exists():
        raise EmbedkdError(f"data path {path} does not exist")
    if path.is_dir():
        yield from _iter_folder(path, column)
        return
    kind = _kind(path)
    if path.stat().st_size == 0:
        raise EmbedkdError(f"data file {path} is empty")
    if kind not in ("txt", "text", "md", "jsonl", "json", "tsv", "csv"):
        raise EmbedkdError(
            f"unsupported data file type {path.name!r}; use txt, jsonl, tsv or csv (optionally .gz)"
        )
    try:
        with _open_text(path) as f:
            if kind in ("txt", "text", "md"):
                yield from (line.rstrip("\r\n") for line in f)
            elif kind in ("jsonl", "json"):
                yield from _iter_jsonl(f, column or "text", path)
            else:
                yield from _iter_table(f, kind, column or "text", path)
    except (OSError, EOFError) as exc:  # corrupt or truncated .gz, unreadable file
        raise EmbedkdError(f"cannot read data file {path}: {exc}") from exc


def _iter_sources(path: Path, column: str, sources: set[str]) -> Iterator[str]:
    """Rows of a table or JSON-lines file whose ``source`` column starts with one of ``sources``."""
    kind = _kind(path)
    if not path.is_file() or kind not in ("jsonl", "json", "tsv", "csv"):
        raise EmbedkdError(
            f"a source filter needs a tsv, csv or jsonl file with a 'source' column; got {path}"
        )
    with _open_text(path) as f:
        if kind in ("jsonl", "json"):
            rows: Iterable[dict] = (row for _, row in _json_lines(f, path))
        else:
            rows = _table(f, kind, path, (column, SOURCE_COLUMN))
        seen: set[str] = set()
        matched: set[str] = set()
        for row in rows:
            source = str(row.get(SOURCE_COLUMN))
            seen.add(source)
            hits = {s for s in sources if source.startswith(s)}
            if hits:
                matched |= hits
                yield str(row.get(column) or "")
    missing = sorted(sources - matched)
    if missing:
        raise EmbedkdError(f"{path} has no rows of source(s) {missing}; its sources are {sorted(seen)}")


def _json_lines(f: Iterable[str], path: Path) -> Iterator[tuple[int, dict]]:
    for n, line in enumerate(f, 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise EmbedkdError(f"{path}:{n} is not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise EmbedkdError(f"{path}:{n} is not a JSON object")
            yield n, row


def _iter_jsonl(f: Iterable[str], column: str, path: Path) -> Iterator[str]:
    for n, row in _json_lines(f, path):
        yield _field(row, column, path, n)


def _iter_table(f: Iterable[str], kind: str, column: str, path: Path) -> Iterator[str]:
    yield from (row[column] or "" for row in _table(f, kind, path, (column,)))


def _table(f: Iterable[str], kind: str, path: Path, columns: Sequence[str]) -> Iterator[dict]:
    csv.field_size_limit(1 << 28)
    # TSV has no quoting convention: with csv's default quoting a stray '"' would swallow the
    # following lines into one field (it merged 33 rows of distill-text's merged TSV).
    quoting = csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(f, delimiter="\t" if kind == "tsv" else ",", quoting=quoting)
    if reader.fieldnames is None:
        raise EmbedkdError(f"data file {path} has no header row")
    for column in columns:
        if column not in reader.fieldnames:
            raise EmbedkdError(
                f"{path} has no column {column!r}; columns are {reader.fieldnames} (use --text-column)"
            )
    yield from reader


def _field(row: dict, column: str, path: Path, line_no: int) -> str:
    if column not in row:
        raise EmbedkdError(
            f"{path}:{line_no} has no field {column!r}; fields are {sorted(row)} (use --text-column)"
        )
    return str(row[column] or "")


def _iter_folder(path: Path, column: str | None) -> Iterator[str]:
    corpus = next((path / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (path / n).exists()), None)
    queries = next((path / n for n in ("queries.jsonl", "queries.jsonl.gz") if (path / n).exists()), None)
    if corpus or queries:
        for part in (corpus, queries):
            if part is None:
                continue
            try:
                with _open_text(part) as f:
                    for _, row in _json_lines(f, part):
                        yield (str(row.get("title") or "") + " " + str(row.get("text") or "")).strip()
            except (OSError, EOFError) as exc:
                raise EmbedkdError(f"cannot read data file {part}: {exc}") from exc
        return
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        yield from _iter_hf(path, column)
        return
    raise EmbedkdError(
        f"folder {path} is neither a BEIR folder (corpus.jsonl/queries.jsonl) nor a datasets folder"
    )


def _iter_hf(path: Path, column: str | None) -> Iterator[str]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    splits = list(ds.values()) if isinstance(ds, DatasetDict) else [ds]
    for split in splits:
        col = column or "text"
        if col not in split.column_names:
            raise EmbedkdError(f"dataset {path} has no column {col!r}; columns are {split.column_names}")
        yield from (str(t or "") for t in split[col])


def clean_texts(rows: Iterable[str]) -> tuple[list[str], TextStats]:
    """Strip, drop empty lines and remove exact duplicates (first occurrence kept)."""
    seen: set[str] = set()
    out: list[str] = []
    n = empty = dup = 0
    for raw in rows:
        n += 1
        text = " ".join(raw.split())
        if not text:
            empty += 1
        elif text in seen:
            dup += 1
        else:
            seen.add(text)
            out.append(text)
    return out, TextStats(rows=n, empty=empty, duplicates=dup, kept=len(out))


def load_texts(
    paths: str | Path | Sequence[str | Path],
    column: str | None = None,
    max_samples: int | None = None,
    *,
    sources: Collection[str] | None = None,
    max_words: int | None = None,
) -> list[str]:
    """Read, clean and de-duplicate texts from one or more sources.

    Args:
        paths: file(s), BEIR/``datasets`` folder(s), or ``"stdlib-docs"`` (texts shipped with Python).
        column: text column/field for tsv, csv, jsonl and ``datasets`` sources (default ``text``).
        max_samples: keep at most this many texts (the first ones, after de-duplication).
        sources: keep only rows whose ``source`` column starts with one of these (tsv, csv, jsonl).
        max_words: keep only texts of at most this many whitespace-separated words (query-like texts).

    Raises:
        EmbedkdError: a source is missing, unreadable or yields no text.
        ConfigError: ``max_samples`` is not positive.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise EmbedkdError("no data given")
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"max_samples must be a positive number of texts, got {max_samples}")
    rows = (t for p in paths for t in iter_rows(p, column, sources))
    if max_words:
        rows = (t for t in rows if len(t.split()) <= max_words)
    texts, stats = clean_texts(rows)
    logger.info(
        "data: %d rows, %d empty dropped, %d duplicates removed, %d texts",
        stats.rows,
        stats.empty,
        stats.duplicates,
        stats.kept,
    )
    if not texts:
        raise EmbedkdError(f"no non-empty text in {', '.join(map(str, paths))}")
    return texts[:max_samples] if max_samples else texts


def stdlib_docs_texts() -> Iterator[str]:
    """Sentences from the Python standard library's own documentation (module and function docstrings).

    Always available offline, so the default distillation needs nothing but the install. The
    docstrings are collected in a fresh interpreter: in this one, libraries imported earlier (torch
    patches a few stdlib functions) and submodules loaded as a side effect would change the corpus.

    Raises:
        EmbedkdError: the collecting interpreter failed.
    """
    import os
    import subprocess
    import sys

    package_root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from embedkd.data import _print_stdlib_docs; _print_stdlib_docs()"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmbedkdError(f"could not collect the stdlib-docs corpus: {last}")
    yield from json.loads(proc.stdout)


def _print_stdlib_docs() -> None:
    """Print the stdlib-docs paragraphs as one JSON list (run by :func:`stdlib_docs_texts`)."""
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):  # a module that prints on import must not corrupt the JSON
        paragraphs = list(_stdlib_paragraphs())
    print(json.dumps(paragraphs))


def _stdlib_paragraphs() -> Iterator[str]:
    import pydoc
    import re
    import sys
    import warnings

    side_effects = {
        "this",
        "antigravity",
        "idlelib",
        "turtledemo",
        "tkinter",
        "turtle",
        "lib2to3",
        "ensurepip",
    }
    names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in side_effects)
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = __import__(name)
            except Exception:  # noqa: BLE001 - platform modules that do not import here
                continue
        docs = [pydoc.getdoc(module)]
        for attr in dir(module):
            if not attr.startswith("_"):
                docs.append(pydoc.getdoc(getattr(module, attr, None)) or "")
        for doc in docs:
            for para in re.split(r"\n\s*\n", doc):
                para = " ".join(para.split())
                if 20 <= len(para) <= 600 and not para.startswith((">>>", "...")):
                    yield para


def split_texts(
    texts: Sequence[str], max_samples: int | None, heldout: int, seed: int
) -> tuple[list[str], list[str]]:
    """Shuffle with ``seed``; the first ``heldout`` texts are evaluation-only, the next ``max_samples`` train.

    At most a tenth of the texts is held out, so a small file still leaves most of it to train on.

    Raises:
        EmbedkdError: nothing is left to train on.
    """
    import random

    texts = list(texts)
    random.Random(seed).shuffle(texts)
    heldout = min(heldout, max(1, len(texts) // 10))
    train = texts[heldout:]
    if max_samples:
        train = train[:max_samples]
    if not train:
        raise EmbedkdError(
            f"only {len(texts)} texts: nothing left to train on after {heldout} held-out texts"
        )
    return train, texts[:heldout]
