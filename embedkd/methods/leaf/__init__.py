"""LEAF: regress a student's embeddings onto a (possibly black-box) teacher's.

The teacher embeds every training text once (through :class:`~embedkd.cache.TeacherCache`); the student
(any HF/ST model, optionally pruned, with a linear projection when dims differ) is trained with
sentence-transformers' ``MSELoss`` (squared L2 to the teacher vector, optionally under ``MatryoshkaLoss``)
by ``SentenceTransformerTrainer``, which brings checkpoints, resume and DDP (``torchrun``).

Python API::

    import embedkd
    out = embedkd.distill(teacher="sentence-transformers/all-mpnet-base-v2",
                          student="sentence-transformers/all-MiniLM-L6-v2",
                          data="texts.tsv.gz", output="runs/leaf-minilm", max_samples=20000)
"""

from __future__ import annotations

from pathlib import Path

from embedkd.methods.leaf.config import LeafConfig

CONFIG = LeafConfig


def run(config: LeafConfig) -> Path:
    """Run one LEAF distillation as configured; returns the output directory."""
    from embedkd.methods.leaf.train import train_leaf

    return train_leaf(config)


__all__ = ["CONFIG", "LeafConfig", "run"]
