"""``--method ontology``: distil the weighted-Tversky concept-set similarity into a text embedder.

The teacher is not a network but an interpretable score: each training report becomes present /
negated / uncertain concept sets (:mod:`embedkd.ontology`), report pairs are sampled (half of them
"hard": pairs that share at least one expanded concept, found through the inverted index), and the
Tversky similarity of each pair is the label. The student (any HF/ST model, or ``static:MODEL``, a bag
of that model's token vectors) is trained with sentence-transformers' ``CoSENTLoss`` (or
``CosineSimilarityLoss``) by ``SentenceTransformerTrainer`` so that its cosine reproduces the ranking of
the set similarity; then it searches through FAISS like any embedder. The ontologies are given with
``--ontologies`` (``chest-xray,hp.obo``); ``--teacher`` is not used by this method.

Python API::

    import embedkd
    out = embedkd.distill(method="ontology", student="sentence-transformers/all-MiniLM-L6-v2",
                          data=["reports.csv"], output="runs/ontology-student",
                          ontologies=["chest-xray"], pairs=20000)

A ``student`` that is an earlier ontology student's directory continues its training; the new card
records the runs behind it (:func:`training_lineage`).
"""

from __future__ import annotations

from pathlib import Path

from embedkd.methods.ontology.card import training_lineage
from embedkd.methods.ontology.config import OntologyConfig, OntologyDistillConfig, PairLoss

CONFIG = OntologyConfig


def run(config: OntologyConfig) -> Path:
    """Run one ontology distillation as configured; returns the output directory."""
    from embedkd.methods.ontology.train import train_ontology

    return train_ontology(config)


__all__ = ["CONFIG", "OntologyConfig", "OntologyDistillConfig", "PairLoss", "run", "training_lineage"]
