"""The asymmetric model: queries through the student, documents through the teacher, in one model.

Built with sentence-transformers' ``Router.for_query_document`` so that ``model.encode_query`` runs the
student and ``model.encode_document`` the teacher; the result saves and loads as a plain
SentenceTransformer directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from embedkd.errors import EmbedkdError

logger = logging.getLogger(__name__)


def build_asym_model(student, teacher_model):
    """One SentenceTransformer routing ``query`` to ``student`` and ``document`` to ``teacher_model``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Router

    s_dim, t_dim = student.get_embedding_dimension(), teacher_model.get_embedding_dimension()
    if s_dim != t_dim:
        raise EmbedkdError(f"asymmetric model needs equal dims: student {s_dim}, teacher {t_dim}")
    router = Router.for_query_document(query_modules=list(student), document_modules=list(teacher_model))
    return SentenceTransformer(modules=[router], device=str(student.device))


def save_asym_model(student, teacher, path: str | Path) -> Path:
    """Save the asymmetric model of ``student`` and a SentenceTransformer ``teacher`` to ``path``."""
    teacher_model = getattr(teacher, "model", None)
    if teacher_model is None:
        raise EmbedkdError(f"--save-asym needs a local SentenceTransformer teacher, not {teacher.id}")
    model = build_asym_model(student, teacher_model)
    model.save(str(path))
    logger.info("asymmetric model saved to %s", path)
    return Path(path)
