"""The held-out fidelity check run by the sentence-transformers trainer during distillation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from embedkd.fidelity import bank_overlap, vector_fidelity

logger = logging.getLogger(__name__)


class FidelityEvaluator(BaseEvaluator):
    """Trainer evaluator comparing the student with precomputed (cached) teacher vectors.

    Like sentence-transformers' ``MSEEvaluator``, but the teacher side is given as vectors, so a
    black-box teacher is never called again, and mean cosine is reported next to MSE.

    Args:
        texts: held-out texts (never trained on).
        teacher_vectors: the teacher's vectors of ``texts``.
        batch_size: student encoding batch size.
        name: metric prefix.
        bank: teacher vectors of other texts: when given, ``top{k}_overlap`` says how much of each
            held-out text's teacher-space top-k in the bank its student vector also finds (a signal
            that tracks retrieval where mean cosine does not).
        k: neighbours compared.
    """

    def __init__(
        self,
        texts: Sequence[str],
        teacher_vectors: np.ndarray,
        *,
        batch_size: int = 64,
        name: str = "heldout",
        bank: np.ndarray | None = None,
        k: int = 10,
    ) -> None:
        super().__init__()
        self.texts, self.teacher_vectors = list(texts), teacher_vectors
        self.bank, self.k = bank, k
        self.batch_size, self.name = batch_size, name
        self.primary_metric = "cosine"

    def __call__(
        self, model, output_path: str | None = None, epoch: float = -1, steps: int = -1
    ) -> dict[str, float]:
        vecs = model.encode(
            self.texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        metrics = vector_fidelity(vecs, self.teacher_vectors)
        if self.bank is not None and len(self.bank):
            metrics[f"top{self.k}_overlap"] = bank_overlap(vecs, self.teacher_vectors, self.bank, self.k)
        logger.info(
            "held-out fidelity (%d texts, step %s): %s",
            len(self.texts),
            steps,
            ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()),
        )
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    @property
    def description(self) -> str:
        return "Held-out fidelity to the teacher"
