"""Deterministic fake encoders and tiny offline task data for the eval tests.

The encoders are bags of words over a fixed vocabulary with per-word weights, so every cosine, rank
and therefore every nDCG/Spearman in the tests can be worked out by hand (see the test docstrings).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VOCAB = ("a", "b", "c", "f", "d", "e")  # order matters for Matryoshka truncation tests

CORPUS = [
    {"_id": "d1", "title": "a", "text": "b"},  # "a b"
    {"_id": "d2", "title": "", "text": "c d"},
    {"_id": "d3", "title": "a b", "text": "c c c c"},
    {"_id": "d4", "title": "e", "text": "f"},
]
QUERIES = [
    {"_id": "q1", "text": "a b"},
    {"_id": "q2", "text": "c"},
    {"_id": "q3", "text": "f"},
    {"_id": "q9", "text": "unjudged query"},
]
QRELS = [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d4", 1)]

STS_PAIRS = [  # (sentence1, sentence2, gold score)
    ("a b", "a b", 5.0),
    ("a b", "a c c", 2.0),
    ("c", "c d", 3.0),
    ("e", "f", 0.0),
    ("a", "a b c", 4.0),
]


class BagOfWords:
    """Teacher-protocol encoder: vector[i] = weight[i] * count of VOCAB[i] (role-independent).

    Args:
        weights: per-word weights (default all 1).
        shift: roll the output dimensions (a model "not in the teacher's space").
        dim: keep only the first ``dim`` dimensions (a model of another size).
    """

    def __init__(
        self,
        name: str = "bow",
        weights: dict[str, float] | None = None,
        shift: int = 0,
        dim: int | None = None,
    ):
        self.w = np.array([(weights or {}).get(v, 1.0) for v in VOCAB], dtype=np.float32)
        self.shift, self.keep = shift, dim
        self.id, self.dim = f"fake:{name}", dim or len(VOCAB)
        self.calls: list[tuple[str, int]] = []

    def prompt(self, role: str) -> str:
        return ""

    def encode(self, texts, role="document", *, batch_size=32, show_progress=False) -> np.ndarray:
        self.calls.append((role, len(texts)))
        out = np.zeros((len(texts), len(VOCAB)), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in text.split():
                if token in VOCAB:
                    out[i, VOCAB.index(token)] += 1.0
        out = np.roll(out * self.w, self.shift, axis=1)
        return out[:, : self.dim]


def teacher() -> BagOfWords:
    """The reference space."""
    return BagOfWords("teacher")


def student() -> BagOfWords:
    """Same space as the teacher, with word "d" down-weighted to 0.1."""
    return BagOfWords("student", weights={"d": 0.1})


def write_beir(folder: Path, *, corpus=CORPUS, queries=QUERIES, qrels=QRELS, gz: bool = False) -> Path:
    """Write a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    corpus_text = "".join(json.dumps(d) + "\n" for d in corpus)
    if gz:
        with gzip.open(folder / "corpus.jsonl.gz", "wt") as f:
            f.write(corpus_text)
    else:
        (folder / "corpus.jsonl").write_text(corpus_text)
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


def write_sts(folder: Path, pairs=STS_PAIRS) -> Path:
    """Write an STS-B style folder (sts-test.csv: genre, file, year, id, score, s1, s2)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        f"main-captions\tMSRvid\t2012test\t{i:04d}\t{s:.3f}\t{a}\t{b}" for i, (a, b, s) in enumerate(pairs)
    ]
    (folder / "sts-test.csv").write_text("\n".join(rows) + "\n")
    return folder
