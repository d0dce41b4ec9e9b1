"""The held-out fidelity check run by the sentence-transformers trainer during distillation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from embedkd.fidelity import vector_fidelity

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
    """

    def __init__(
        self,
        texts: Sequence[str],
        teacher_vectors: np.ndarray,
        *,
        batch_size: int = 64,
        name: str = "heldout",
    ) -> None:
        super().__init__()
        self.texts, self.teacher_vectors = list(texts), teacher_vectors
        self.batch_size, self.name = batch_size, name
        self.primary_metric = "cosine"

    def __call__(
        self, model, output_path: str | None = None, epoch: float = -1, steps: int = -1
    ) -> dict[str, float]:
        vecs = model.encode(
            self.texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        metrics = vector_fidelity(vecs, self.teacher_vectors)
        logger.info(
            "held-out fidelity (%d texts, step %s): cosine %.4f, mse %.6f",
            len(self.texts),
            steps,
            metrics["cosine"],
            metrics["mse"],
        )
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    @property
    def description(self) -> str:
        return "Held-out fidelity to the teacher"
