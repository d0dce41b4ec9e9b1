"""Evaluation tasks: local folders as real ``mteb`` tasks, and MTEB tasks by name.

A task spec is ``beir:PATH`` (a BEIR folder: ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``,
``qrels/<split>.tsv``), ``sts:PATH`` (an STS-B folder with ``sts-<split>.csv``, an STS-B style file,
or a ``.jsonl``/``.tsv`` with ``sentence1``, ``sentence2``, ``score``) or the name of an MTEB task.
Local tasks subclass :class:`mteb.abstasks.retrieval.AbsTaskRetrieval` / :class:`mteb.abstasks.sts.AbsTaskSTS`
and only override ``load_data``, so every score is computed by mteb itself.

Example::

    task = load_task("beir:../shared/data/beir-scifact")
    prepare(task)                       # loads and checks the data (clear errors on bad input)
    texts = task_texts(task)            # queries and documents, exactly as mteb feeds them
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedkd.errors import EmbedkdError

logger = logging.getLogger(__name__)

_COMMON_METADATA: dict[str, Any] = {
    "dataset": {"path": "local", "revision": "local"},
    "category": "t2t",
    "modalities": ["text"],
    "eval_langs": ["eng-Latn"],
    "date": None,
    "domains": [],
    "task_subtypes": [],
    "license": "not specified",
    "annotations_creators": "derived",
    "dialect": [],
    "sample_creation": "found",
    "bibtex_citation": "",
}


@dataclass(frozen=True)
class TaskTexts:
    """The texts a task feeds to the query side and to the document side of a model."""

    queries: list[str]
    documents: list[str]


def document_text(title: str | None, text: str) -> str:
    """A corpus entry as mteb's dataloader builds it: ``"title text"`` stripped (text alone without title)."""
    return (title + " " + text).strip() if title else text.strip()


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``path``'s lines numbered from 1; a file that is not (gzipped) UTF-8 text is one clear error."""
    try:
        with _open(path) as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError as exc:
        raise EmbedkdError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected a text file"
        ) from None
    except (OSError, EOFError) as exc:  # a bad or truncated .gz, a folder where a file belongs
        raise EmbedkdError(f"{path} cannot be read ({exc})") from None


def _find(folder: Path, *names: str) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in _lines(path):
        if not line.strip():
            continue
        rows.append(_json_line(path, n, line))
        if not isinstance(rows[-1], dict) or "_id" not in rows[-1]:
            raise EmbedkdError(f"{path}:{n} has no '_id' field")
    return rows


def _json_line(path: Path, n: int, line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise EmbedkdError(f"{path}:{n} is not valid JSON ({exc})") from None


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for n, line in _lines(path):
        parts = line.rstrip("\n").split("\t")
        if not line.strip() or (n == 1 and parts[0] == "query-id"):
            continue
        if len(parts) < 3:
            raise EmbedkdError(f"{path}:{n} needs 3 tab-separated columns (query-id, corpus-id, score)")
        try:
            score = int(float(parts[2]))
        except ValueError:
            raise EmbedkdError(f"{path}:{n} has a non-numeric score {parts[2]!r}") from None
        qrels.setdefault(parts[0], {})[parts[1]] = score
    return qrels


def read_beir(folder: str | Path, split: str = "test") -> dict[str, Any]:
    """Read and check a BEIR folder; returns mteb's ``RetrievalSplitData`` fields.

    Raises:
        EmbedkdError: a file is missing, the task is empty, or the qrels name unknown ids.
    """
    from datasets import Dataset

    folder = Path(folder)
    if not folder.is_dir():
        state = "is a file" if folder.exists() else "does not exist"
        raise EmbedkdError(
            f"BEIR folder {folder} {state}; expected a folder holding corpus.jsonl, queries.jsonl and "
            f"qrels/{split}.tsv"
        )
    corpus_path = _find(folder, "corpus.jsonl", "corpus.jsonl.gz")
    queries_path = _find(folder, "queries.jsonl", "queries.jsonl.gz")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    missing = [
        name
        for name, p in (
            ("corpus.jsonl[.gz]", corpus_path),
            ("queries.jsonl[.gz]", queries_path),
            (f"qrels/{split}.tsv", qrels_path if qrels_path.is_file() else None),
        )
        if p is None
    ]
    if missing:
        raise EmbedkdError(f"BEIR folder {folder} is missing {', '.join(missing)}")
    corpus = _read_jsonl(corpus_path)
    queries = {str(q["_id"]): str(q.get("text") or "") for q in _read_jsonl(queries_path)}
    qrels = _read_qrels(qrels_path)
    if not corpus or not qrels:
        raise EmbedkdError(
            f"BEIR folder {folder} is an empty task: {len(corpus)} documents, {len(qrels)} queries in qrels/{split}.tsv"
        )
    doc_ids = {str(d["_id"]) for d in corpus}
    unknown_q = sorted(q for q in qrels if q not in queries)
    unknown_d = sorted({d for rel in qrels.values() for d in rel if d not in doc_ids})
    if unknown_q or unknown_d:
        parts = []
        if unknown_q:
            parts.append(f"{len(unknown_q)} query id(s) not in {queries_path.name} (e.g. {unknown_q[0]!r})")
        if unknown_d:
            parts.append(f"{len(unknown_d)} corpus id(s) not in {corpus_path.name} (e.g. {unknown_d[0]!r})")
        raise EmbedkdError(f"{qrels_path} names {' and '.join(parts)}")
    return {
        "corpus": Dataset.from_dict(
            {
                "id": [str(d["_id"]) for d in corpus],
                "title": [str(d.get("title") or "") for d in corpus],
                "text": [str(d.get("text") or "") for d in corpus],
            }
        ),
        "queries": Dataset.from_dict({"id": list(qrels), "text": [queries[q] for q in qrels]}),
        "relevant_docs": qrels,
        "top_ranked": None,
    }


def _sts_file(path: Path, split: str) -> Path:
    if path.is_dir():
        found = _find(path, f"sts-{split}.csv", f"{split}.tsv", f"{split}.jsonl", f"sts-{split}.csv.gz")
        if found is None:
            raise EmbedkdError(f"STS folder {path} has no sts-{split}.csv, {split}.tsv or {split}.jsonl")
        return found
    if not path.is_file():
        raise EmbedkdError(f"STS data {path} does not exist")
    return path


def read_sts(path: str | Path, split: str = "test") -> tuple[list[str], list[str], list[float]]:
    """Read STS pairs: STS-B style (tab-separated: genre, file, year, id, score, s1, s2) or with a header.

    Raises:
        EmbedkdError: missing file, malformed line, or no pairs.
    """
    file = _sts_file(Path(path), split)
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    numbered = [(n, line) for n, line in _lines(file) if line.strip()]
    if file.name.endswith((".jsonl", ".jsonl.gz")):
        rows = [_json_line(file, n, line) for n, line in numbered]
    else:
        lines = [line.rstrip("\n").split("\t") for _, line in numbered]
        header = lines[0] if lines and {"sentence1", "sentence2", "score"} <= set(lines[0]) else None
        rows = [dict(zip(header, p)) for p in lines[1:]] if header else lines
    for n, row in enumerate(rows, 1):
        try:
            if isinstance(row, dict):
                a, b, score = row["sentence1"], row["sentence2"], row["score"]
            else:
                score, a, b = row[4], row[5], row[6]
            scores.append(float(score))
        except (KeyError, IndexError, ValueError, TypeError):
            raise EmbedkdError(
                f"{file}: pair {n} is malformed; expected STS-B columns (genre, file, year, id, score, "
                "sentence1, sentence2) or fields sentence1, sentence2, score"
            ) from None
        s1.append(str(a))
        s2.append(str(b))
    if not scores:
        raise EmbedkdError(f"STS data {file} is an empty task: no sentence pairs")
    return s1, s2, scores


def _task_name(prefix: str, path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.resolve().name) or prefix


def beir_task(path: str | Path, split: str = "test") -> Any:
    """An mteb retrieval task whose ``load_data`` reads the BEIR folder ``path``."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    folder = Path(path)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {"default": {split: read_beir(folder, split)}}
        self.data_loaded = True

    metadata = TaskMetadata(
        name=_task_name("beir", folder),
        description=f"BEIR-format retrieval folder {folder}",
        type="Retrieval",
        main_score="ndcg_at_10",
        eval_splits=[split],
        **_COMMON_METADATA,
    )
    cls = type("LocalBeirTask", (AbsTaskRetrieval,), {"metadata": metadata, "load_data": load_data})
    return cls()


def sts_task(path: str | Path, split: str = "test") -> Any:
    """An mteb STS task whose ``load_data`` reads STS-B style pairs from ``path``."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    source = Path(path)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        s1, s2, scores = read_sts(source, split)
        # mteb min-max normalises gold scores; correlations do not depend on it
        self.min_score, self.max_score = min(scores), max(scores)
        if self.max_score == self.min_score:
            raise EmbedkdError(
                f"STS data {source}: all gold scores are {self.min_score}; nothing to correlate"
            )
        data = {"sentence1": s1, "sentence2": s2, "score": scores}
        self.dataset = DatasetDict({split: Dataset.from_dict(data)})
        self.data_loaded = True

    metadata = TaskMetadata(
        name=_task_name("sts", source),
        description=f"STS pairs from {source}",
        type="STS",
        main_score="cosine_spearman",
        eval_splits=[split],
        **_COMMON_METADATA,
    )
    cls = type("LocalSTSTask", (AbsTaskSTS,), {"metadata": metadata, "load_data": load_data})
    return cls()


def mteb_task(name: str) -> Any:
    """An MTEB task by name (its data is loaded from the hub or the local cache by :func:`prepare`)."""
    import mteb

    try:
        return mteb.get_task(name)
    except KeyError:
        raise EmbedkdError(
            f"unknown task {name!r}: not beir:PATH, sts:PATH or an MTEB task name (e.g. SciFact, STSBenchmark)"
        ) from None


def load_task(spec: str, split: str = "test") -> Any:
    """Build the task a spec names (see the module docstring)."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("beir", "sts"):
        if not rest:
            raise EmbedkdError(f"task spec {spec!r} needs a path after '{kind}:'")
        return beir_task(rest, split) if kind == "beir" else sts_task(rest, split)
    return mteb_task(spec)


def prepare(task: Any) -> Any:
    """Load ``task``'s data once (mteb then reuses it), turning load failures into clear errors."""
    if task.data_loaded:
        return task
    try:
        task.load_data()
    except EmbedkdError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets/hub raise many types when data is unreachable
        raise EmbedkdError(
            f"MTEB task {task.metadata.name!r}: its data is not available here (not in the local Hugging Face "
            f"cache and the hub is unreachable or offline): {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if hasattr(task, "convert_v1_dataset_format_to_v2"):
        task.convert_v1_dataset_format_to_v2(num_proc=None)
    return task


def _splits(task: Any, split: str | None) -> list[tuple[Any, str]]:
    """(subset data, split) pairs of a loaded task."""
    splits = [split] if split else list(task.metadata.eval_splits)
    out = []
    for sp in splits:
        for subset in task.hf_subsets or ["default"]:
            container = (
                task.dataset.get(subset, task.dataset) if isinstance(task.dataset, dict) else task.dataset
            )
            if sp in container:
                out.append((container[sp], sp))
    return out


def task_texts(task: Any, split: str | None = None) -> TaskTexts | None:
    """Query-side and document-side texts of a loaded retrieval or STS task (``None`` for other types)."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    queries: list[str] = []
    documents: list[str] = []
    if isinstance(task, AbsTaskRetrieval):
        for data, _ in _splits(task, split):
            corpus = data["corpus"]
            titles = corpus["title"] if "title" in corpus.column_names else [""] * len(corpus)
            documents += [document_text(t, x) for t, x in zip(titles, corpus["text"])]
            wanted = {q for q, rel in data["relevant_docs"].items() if rel}
            queries += [t for i, t in zip(data["queries"]["id"], data["queries"]["text"]) if i in wanted]
    elif isinstance(task, AbsTaskSTS):
        c1, c2 = task.column_names
        for data, _ in _splits(task, split):
            queries += list(data[c1])
            documents += list(data[c2])
    else:
        return None
    if not queries or not documents:
        raise EmbedkdError(f"task {task.metadata.name!r} is an empty task (no queries or no documents)")
    return TaskTexts(queries=queries, documents=documents)


def is_retrieval(task: Any) -> bool:
    """Whether ``task`` is a retrieval task (its main score is a ranking metric such as nDCG@10)."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    return isinstance(task, AbsTaskRetrieval)
