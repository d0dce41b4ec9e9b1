"""The model mteb evaluates: one wrapper that routes by mteb's ``prompt_type``.

Queries (``prompt_type=query``) go to the query encoder, documents (``document``) and symmetric inputs
(``None``) to the document encoder. Student mode is (student, student), teacher mode
(teacher, teacher), asym mode (student, teacher): asymmetric search is not a second code path, just
another pair. Embeddings then pass through an :class:`~eval.sweeps.OutputTransform` (Matryoshka
dimension, quantization) and are scored by mteb with cosine similarity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ScoringFunction
from mteb.types import PromptType

from eval.config import Mode
from eval.sweeps import OutputTransform

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata

    from embedkd.encoders import Encoder


class RoutedEncoder(AbsEncoder):
    """An mteb encoder over a (query encoder, document encoder) pair.

    Args:
        query_encoder: the :class:`~embedkd.encoders.Encoder` of ``prompt_type=query`` inputs.
        document_encoder: the encoder of documents and symmetric inputs (role ``None``).
        transform: applied to every batch of embeddings before mteb scores them.
        name: model name recorded in mteb's results.
    """

    def __init__(
        self,
        query_encoder: Encoder,
        document_encoder: Encoder,
        transform: OutputTransform | None = None,
        *,
        name: str,
    ) -> None:
        self.query_encoder, self.document_encoder = query_encoder, document_encoder
        self.transform = transform or OutputTransform()
        self.model = None
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites={
                "name": name if "/" in name else f"embedkd/{name}",
                "revision": "local",
                "similarity_fn_name": ScoringFunction.COSINE,
                "embed_dim": self.transform.dim or document_encoder.dim,
                "framework": ["Sentence Transformers"],
            }
        )

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed a dataloader's texts with the encoder ``prompt_type`` selects, then transform them."""
        texts = [text for batch in inputs for text in batch["text"]]
        if prompt_type == PromptType.query:
            encoder, role = self.query_encoder, "query"
        else:
            encoder, role = self.document_encoder, "document" if prompt_type == PromptType.document else None
        return self.transform(encoder.encode(texts, role))


def routed_model(
    mode: Mode, student: Encoder, teacher: Encoder | None, transform: OutputTransform
) -> RoutedEncoder:
    """The wrapper of one mode: (student, student), (teacher, teacher) or (student, teacher)."""
    query, document = {
        Mode.STUDENT: (student, student),
        Mode.TEACHER: (teacher, teacher),
        Mode.ASYM: (student, teacher),
    }[Mode(mode)]
    name = f"{Mode(mode).value}:{query.id}" if query is document else f"asym:{query.id}+{document.id}"
    name += f"@{transform.label}"
    return RoutedEncoder(query, document, transform, name=_safe_name(name))


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.:+/@" else "_" for c in name)[:200]
