"""Shared pieces of the SciFact evaluation benchmarks (``leaf_scifact.py``, ``peers_scifact.py``).

* :class:`WeightsCachedEncoder`: a student whose document vectors are kept on disk (the teacher
  cache format) under an id that includes a digest of its weights, so a benchmark re-run, or the
  other benchmark, does not re-encode SciFact's 5,183 abstracts with the same weights; retrained
  weights get a new id.
* :func:`query_throughput`: query-encoding throughput of several models with the same code,
  interleaved rounds after a warm-up, median per model (robust on a shared, noisy CPU).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from paths import data_dir

logger = logging.getLogger("bench.eval_common")


def scifact_dir() -> Path:
    """The BEIR SciFact folder in the shared data."""
    return data_dir() / "beir-scifact"


class WeightsCachedEncoder:
    """A SentenceTransformer student as a Teacher-protocol object whose vectors are cached on disk.

    ``encode(texts, "query")`` runs ``encode_query``, ``"document"`` runs ``encode_document`` — the
    calls mteb's own wrapper makes — through :class:`embedkd.cache.TeacherCache`.
    """

    def __init__(
        self,
        path: str,
        *,
        name: str,
        max_seq_length: int | None = None,
        batch_size: int = 32,
        cache_dir: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        from embedkd.cache import TeacherCache
        from embedkd.hub import model_digest, resolve_model

        folder = resolve_model(path)
        self.model = SentenceTransformer(folder)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.dim = int(self.model.get_embedding_dimension())
        self.id = f"student:{name}@seq{self.model.max_seq_length}#{model_digest(folder)}"
        self.batch_size = batch_size
        self.cache = TeacherCache.for_teacher(self, cache_dir)

    def prompt(self, role: str) -> str:
        return (self.model.prompts or {}).get(role, "")

    def _raw(
        self,
        texts: Sequence[str],
        role: str = "document",
        *,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> np.ndarray:
        fn = self.model.encode_query if role == "query" else self.model.encode_document
        return np.asarray(
            fn(list(texts), batch_size=self.batch_size, show_progress_bar=show_progress), dtype=np.float32
        )

    def encode(self, texts: Sequence[str], role: str = "document", **kwargs) -> np.ndarray:
        return self.cache.encode(
            _Raw(self), list(texts), role, batch_size=self.batch_size, show_progress=True
        )


class _Raw:
    """The uncached encoder behind :class:`WeightsCachedEncoder` (same id, so the cache accepts it)."""

    def __init__(self, outer: WeightsCachedEncoder) -> None:
        self.outer, self.id, self.dim = outer, outer.id, outer.dim

    def prompt(self, role: str) -> str:
        return self.outer.prompt(role)

    def encode(self, texts, role="document", *, batch_size=32, show_progress=False) -> np.ndarray:
        return self.outer._raw(texts, role, show_progress=True)


def scifact_test_queries(folder: Path | None = None) -> list[str]:
    """SciFact test queries (ids from qrels/test.tsv), in file order."""
    folder = scifact_dir() if folder is None else folder
    test_ids = {line.split("\t")[0] for line in (folder / "qrels/test.tsv").read_text().splitlines()[1:]}
    rows = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows if r["_id"] in test_ids]


def query_throughput(
    encoders: dict, queries: list[str], batch_size: int, rounds: int = 3
) -> dict[str, float]:
    """Queries per second of each query encoder in ``encoders`` (name -> ``fn(list_of_texts)``).

    Every encoder gets the same queries in chunks of ``batch_size``; one warm-up pass each, then
    ``rounds`` interleaved timed passes; the median pass counts.
    """

    def one_pass(fn) -> float:
        start = time.perf_counter()
        for i in range(0, len(queries), batch_size):
            fn(queries[i : i + batch_size])
        return len(queries) / (time.perf_counter() - start)

    for fn in encoders.values():
        one_pass(fn)
    runs: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, fn in encoders.items():
            runs[name].append(one_pass(fn))
    logger.info("throughput b%d: %s", batch_size, {k: [round(x, 1) for x in v] for k, v in runs.items()})
    return {name: statistics.median(v) for name, v in runs.items()}


def st_query_fn(model, batch_size: int):
    """``encode_query`` of a SentenceTransformer as a plain function (what the throughput timer calls)."""
    return lambda texts: model.encode_query(texts, batch_size=batch_size, show_progress_bar=False)


def folder_mb(path: str | Path) -> float:
    """Size on disk of a model folder in MB (weights, tokenizer, configs; training checkpoints excluded)."""
    root = Path(path)
    files = [p for p in root.rglob("*") if p.is_file()]
    return (
        sum(
            p.stat().st_size
            for p in files
            if not any(part.startswith("checkpoint") for part in p.relative_to(root).parts)
        )
        / 1e6
    )
