"""What the IU X-ray ontology benchmarks share: the reports, the split, rankings and their scores.

Used by ``ontology_iu.py`` (the benchmark), ``ontology_iu_val.py`` (settings chosen on the training
reports) and ``ontology_latency.py`` (the query encoder's latency alone).
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from paths import data_dir

NON_FINDINGS = {"normal", "no indexing"}
K = 10


def reports_csv() -> Path:
    """The IU X-ray reports file in the shared data."""
    return data_dir() / "iu-xray-reports" / "indiana_reports.csv"


def default_ontologies() -> list[str]:
    """The packaged chest X-ray vocabulary, then HPO, DOID and the symptom ontology (shared data)."""
    data = data_dir()
    return [
        "chest-xray",
        str(data / "ontology-hpo" / "hp.obo"),
        str(data / "ontology-doid" / "doid.2016-09-01.obo"),
        str(data / "ontology-symptom" / "symp.obo"),
    ]


def load_reports(path: Path) -> list[dict]:
    """Non-empty reports with their Problems labels and MeSH main headings (lower-cased)."""
    out = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            text = f"{row['findings'].strip()} {row['impression'].strip()}".strip()
            if not text:
                continue
            problems = {p.strip().lower() for p in row["Problems"].split(";") if p.strip()} - NON_FINDINGS
            heads = {
                m.split("/")[0].strip().lower() for m in row["MeSH"].split(";") if m.strip()
            } - NON_FINDINGS
            out.append({"uid": row["uid"], "text": text, "labels": problems, "mesh": heads})
    return out


def split_reports(reports: list[dict], train_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """The seeded split: ``(train, evaluation)``; evaluation reports keep their file order."""
    order = list(range(len(reports)))
    random.Random(seed).shuffle(order)
    n_train = int(len(order) * train_fraction)
    return [reports[i] for i in order[:n_train]], [reports[i] for i in sorted(order[n_train:])]


@dataclass
class Queries:
    """Queries among ``labels``: every report with a label another report shares, and the long tail.

    ``overall`` and ``longtail`` hold ``(query index, relevant labels)``; long-tail labels are those in
    fewer than 1% of ``reference`` reports (default: the reports searched).
    """

    labels: list[set[str]]
    overall: list[tuple[int, set[str]]]
    longtail: list[tuple[int, set[str]]]
    longtail_labels: set[str]

    @classmethod
    def build(cls, labels: list[set[str]], reference: list[set[str]] | None = None) -> Queries:
        ref = labels if reference is None else reference
        ref_freq = Counter(lab for ls in ref for lab in ls)
        tail = {lab for lab, c in ref_freq.items() if c < 0.01 * len(ref)}
        freq = Counter(lab for ls in labels for lab in ls)
        overall = [(q, labels[q]) for q in range(len(labels)) if any(freq[x] > 1 for x in labels[q])]
        longtail = [
            (q, labels[q] & tail) for q in range(len(labels)) if any(freq[x] > 1 for x in labels[q] & tail)
        ]
        return cls(labels, overall, longtail, tail)

    @property
    def ids(self) -> list[int]:
        return [q for q, _ in self.overall]

    def score(self, rankings: dict[int, list[int]]) -> dict:
        """P@10 and nDCG@10, overall and on the long tail."""
        overall, tail = (
            evaluate(rankings, self.overall, self.labels),
            evaluate(rankings, self.longtail, self.labels),
        )
        return {
            "p10": overall["p10"],
            "ndcg10": overall["ndcg10"],
            "p10_longtail": tail["p10"],
            "ndcg10_longtail": tail["ndcg10"],
        }


def ndcg_at_k(ranked_rel: list[bool], n_rel: int, k: int = K) -> float:
    dcg = sum(1 / np.log2(i + 2) for i, r in enumerate(ranked_rel[:k]) if r)
    idcg = sum(1 / np.log2(i + 2) for i in range(min(k, n_rel)))
    return dcg / idcg if idcg else 0.0


def evaluate(
    rankings: dict[int, list[int]], queries: list[tuple[int, set[str]]], labels: list[set[str]]
) -> dict:
    """Mean P@10 and nDCG@10 of ``rankings[q]`` for each ``(q, relevant-label set)``."""
    p, n = [], []
    for q, qlabels in queries:
        rel = [bool(labels[d] & qlabels) for d in rankings[q][:K]]
        n_rel = sum(1 for d in range(len(labels)) if d != q and labels[d] & qlabels)
        p.append(sum(rel) / K)
        n.append(ndcg_at_k(rel, n_rel))
    return {"p10": float(np.mean(p)), "ndcg10": float(np.mean(n)), "queries": len(queries)}


def set_rankings(index, query_ids: list[int]) -> dict[int, list[int]]:
    """Top-K documents of a :class:`~embedkd.ontology.SetIndex` for each query id (itself excluded)."""
    return {q: [d for d, _ in index.search(index.profiles[q], k=K, exclude=q)] for q in query_ids}


def vector_rankings(
    vecs: np.ndarray, query_ids: list[int], query_vecs: np.ndarray | None = None
) -> dict[int, list[int]]:
    """Top-K documents by cosine for each query id (itself excluded); ``query_vecs`` (one row per
    document, same order) encodes the queries when they come from another model (asymmetric)."""
    v = vecs / np.linalg.norm(vecs, axis=1, keepdims=True).clip(1e-12)
    qv = (
        v
        if query_vecs is None
        else query_vecs / np.linalg.norm(query_vecs, axis=1, keepdims=True).clip(1e-12)
    )
    sims = qv[query_ids] @ v.T
    out = {}
    for row, q in enumerate(query_ids):
        sims[row, q] = -np.inf
        top = np.argpartition(-sims[row], K)[:K]
        out[q] = [int(d) for d in top[np.argsort(-sims[row][top], kind="stable")]]
    return out


def bm25_rankings(texts: list[str], query_ids: list[int]) -> dict[int, list[int]]:
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([texts[q] for q in query_ids], return_ids=False, show_progress=False)
    docs, _ = retriever.retrieve(tokens, k=K + 1, show_progress=False)
    return {q: [int(d) for d in docs[i] if d != q][:K] for i, q in enumerate(query_ids)}


def encode_cached(model: str, texts: list[str], max_seq_length: int, batch_size: int) -> np.ndarray:
    """Document vectors of a packaged model, through the teacher cache (never encoded twice)."""
    from embedkd.cache import cached_encode
    from embedkd.teachers import SentenceTransformerTeacher

    teacher = SentenceTransformerTeacher(model, max_seq_length=max_seq_length)
    return cached_encode(teacher, texts, "document", batch_size=batch_size, show_progress=True)


class ExportedStudent:
    """An ONNX / OpenVINO student (:mod:`embedkd.backends`) with the ``SentenceTransformer.encode``
    calls this benchmark makes; symmetric (role None), as the student is for reports."""

    def __init__(self, encoder, seq_len: int) -> None:
        self.encoder = encoder
        self.encoder.max_seq_length = seq_len  # dynamic sequence axis: only the tokenizer cuts

    def get_embedding_dimension(self) -> int:
        return self.encoder.dim

    def encode(self, texts, batch_size=32, normalize_embeddings=False, show_progress_bar=False, **_):
        vecs = self.encoder.encode(list(texts), None, batch_size=batch_size, show_progress=show_progress_bar)
        if normalize_embeddings:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs


def load_student(path: Path, seq_len: int, quantize: str | None, backend: str = "torch"):
    """The student as served: its max length set (transformers), optionally int8-quantized.

    ``backend`` onnx/openvino runs it exported (its int8 graph with ``quantize``); torch with ``quantize``
    keeps PyTorch's eager dynamic quantization, which the recorded results used.
    """
    from sentence_transformers import SentenceTransformer

    from embedkd.students import quantize_for_cpu

    if backend != "torch":
        from embedkd.backends import load_query_encoder

        return ExportedStudent(load_query_encoder(str(path), backend, quantize=quantize), seq_len)

    student = SentenceTransformer(str(path), device="cpu")
    if type(student[0]).__name__ != "StaticEmbedding":  # a bag of tokens has no length limit to set
        student.max_seq_length = seq_len
    if quantize:
        quantize_for_cpu(student, quantize)
    return student
