"""DSE: distil a cross-encoder's pair logits into a bi-encoder with a small pair head.

``embedkd distill --method dse --teacher CE --student S --data PAIRS... --task regression|binary|nli``.
The teacher's logits over the training pairs are computed once through the teacher cache; the student
(any HF/ST model) and its :class:`~embedkd.methods.dse.student.PairHead` train with
``SentenceTransformerTrainer`` on :class:`~embedkd.methods.dse.loss.DSELoss`. λ = 0 (``lam=0``) trains
the same student on the labels alone (the control) and needs no teacher.

Python API::

    import embedkd
    from embedkd.methods.dse.student import load_dse_student

    out = embedkd.distill(method="dse", teacher="runs/ce-stsb", student="all-MiniLM-L6-v2",
                          data="sts-train.csv", output="runs/dse-stsb", task="regression")
    load_dse_student(out).score_pairs(["A man plays."], ["A man is playing."])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedkd.methods.dse.config import DSEConfig

CONFIG = DSEConfig


def run(config: DSEConfig) -> Path:
    """Run one DSE distillation as configured; returns the output directory."""
    from embedkd.methods.dse.train import train_dse

    return train_dse(config)


def distill_dse(
    teacher: str | Path,
    student: str | Path,
    data: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    task: str = "regression",
    lam: float = 0.5,
    show_progress: bool | None = None,
    **options: Any,
) -> Path:
    """Train a DSE student (bi-encoder + pair head) from a cross-encoder teacher.

    The same as ``embedkd.distill(method="dse", ...)``, with ``task`` defaulting to ``regression``.

    Args:
        teacher: cross-encoder path or id (unused when ``lam`` is 0).
        student: bi-encoder to start from (local dir, HF id, offline package id).
        data: pair file(s) (see :func:`embedkd.methods.dse.data.load_sentence_pairs`); unlabelled pairs
            need ``lam`` > 0.
        output: output directory; loads with ``SentenceTransformer(output)`` and
            :func:`embedkd.methods.dse.student.load_dse_student`.
        task: ``regression``, ``binary`` or ``nli``.
        lam: weight of the teacher term; 0 gives the task-only control.
        show_progress: progress bars (default: when logging at INFO).
        **options: the other :class:`DSEConfig` fields (epochs, max_steps, batch_size, lr, head_lr, ...).

    Returns:
        ``output`` as a Path.
    """
    from embedkd.methods import make_config
    from embedkd.methods.dse.train import train_dse

    config = make_config(
        "dse", teacher=teacher, student=student, data=data, output=output, task=task, lam=lam, **options
    )
    return train_dse(config, show_progress)


__all__ = ["CONFIG", "DSEConfig", "distill_dse", "run"]
