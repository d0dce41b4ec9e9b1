"""Text encoders behind the mteb wrappers, each an :class:`embedkd.encoders.Encoder` (texts + role in,
float32 vectors out), each text embedded once.

* :class:`~embedkd.encoders.SentenceTransformerEncoder` runs a student the way mteb's own wrapper does
  (``encode_query`` / ``encode_document`` / ``encode``), so scores match mteb's.
* :class:`CachedTeacherEncoder` asks a :class:`~embedkd.teachers.Teacher` only through the on-disk
  :class:`~embedkd.cache.TeacherCache`: evaluating three students against one teacher embeds the
  corpus once.
* :class:`MemoEncoder` keeps every vector of a run in memory, so dimension and precision sweeps and the
  fidelity metrics reuse them instead of encoding again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedkd.encoders import SentenceTransformerEncoder
from embedkd.errors import EmbedkdError

if TYPE_CHECKING:
    from embedkd.encoders import Encoder
    from embedkd.teachers import Teacher

logger = logging.getLogger(__name__)


class CachedTeacherEncoder:
    """A :class:`~embedkd.teachers.Teacher` whose vectors always come through the teacher cache.

    A symmetric input (``role=None``, e.g. STS sentences) is embedded with the document role.
    """

    def __init__(
        self,
        teacher: Teacher,
        *,
        cache_dir: str | Path | None = None,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> None:
        from embedkd.cache import TeacherCache

        self.teacher = teacher
        self.id, self.dim = teacher.id, int(teacher.dim)
        self.cache = TeacherCache.for_teacher(teacher, cache_dir)
        self.batch_size, self.show_progress = batch_size, show_progress

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = "document",
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` through the cache (only texts it lacks reach the teacher)."""
        return self.cache.encode(
            self.teacher,
            list(texts),
            role,
            batch_size=batch_size or self.batch_size,
            show_progress=self.show_progress if show_progress is None else show_progress,
        )


class MemoEncoder:
    """Memoizes an :class:`~embedkd.encoders.Encoder` per (role, text) for the lifetime of one evaluation."""

    def __init__(self, encoder: Encoder) -> None:
        self.inner, self.id, self.dim = encoder, str(encoder.id), int(encoder.dim)
        self._memo: dict[tuple[str | None, str], np.ndarray] = {}
        self.encoded = 0  # texts actually sent to the inner encoder

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = "document",
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts``; only texts not seen before with ``role`` reach the inner encoder."""
        missing = list(dict.fromkeys(t for t in texts if (role, t) not in self._memo))
        if missing:
            vecs = self.inner.encode(missing, role, batch_size=batch_size, show_progress=show_progress)
            if vecs.shape != (len(missing), self.dim):
                raise EmbedkdError(
                    f"encoder {self.id} returned shape {vecs.shape}, expected ({len(missing)}, {self.dim})"
                )
            self.encoded += len(missing)
            for text, vec in zip(missing, vecs):
                self._memo[(role, text)] = vec
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._memo[(role, t)] for t in texts]).astype(np.float32, copy=False)


def _model_name(spec: str) -> str:
    from embedkd.teachers import _canonical_name

    return _canonical_name(spec) if not Path(spec).expanduser().is_dir() else str(Path(spec).expanduser())


def load_student_encoder(
    model: Any,
    *,
    max_seq_length: int | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
    backend: str = "torch",
) -> MemoEncoder:
    """The student as a memoized encoder: a model string, a ``SentenceTransformer`` or an
    :class:`~embedkd.encoders.Encoder` (used as is).

    ``backend`` (``onnx``, ``openvino``) runs a model string through :mod:`embedkd.backends` instead.
    Not :func:`embedkd.students.load_student`, which loads the ``SentenceTransformer`` itself.
    """
    from sentence_transformers import SentenceTransformer

    if isinstance(model, str) and backend != "torch":
        from embedkd.backends import load_query_encoder
        from embedkd.encoders import resolve_model_checked

        resolve_model_checked(model, "student model")  # a bad folder: one clear error before any export

        return MemoEncoder(
            load_query_encoder(
                model, backend, batch_size=batch_size, show_progress=show_progress, name=_model_name(model)
            )
        )
    if isinstance(model, str):
        from embedkd.encoders import resolve_model_checked

        st = SentenceTransformer(resolve_model_checked(model, "student model"))
        name = _model_name(model)
    elif isinstance(model, SentenceTransformer):
        st, name = model, str(getattr(model.model_card_data, "base_model", None) or "student")
    elif hasattr(model, "encode") and hasattr(model, "dim") and hasattr(model, "id"):
        return MemoEncoder(model)
    else:
        raise EmbedkdError(
            f"cannot use {type(model).__name__} as a model; give a path, id or SentenceTransformer"
        )
    if max_seq_length:
        st.max_seq_length = max_seq_length
    return MemoEncoder(
        SentenceTransformerEncoder(st, name, batch_size=batch_size, show_progress=show_progress)
    )


def load_teacher_encoder(
    teacher: Any,
    *,
    max_seq_length: int | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
) -> MemoEncoder:
    """The teacher as a memoized encoder whose vectors come through the teacher cache."""
    from sentence_transformers import SentenceTransformer

    from embedkd.teachers import SentenceTransformerTeacher, load_teacher

    if isinstance(teacher, str):
        teacher = load_teacher(teacher, max_seq_length=max_seq_length)
    elif isinstance(teacher, SentenceTransformer):
        teacher = SentenceTransformerTeacher(teacher, max_seq_length=max_seq_length)
    elif not (hasattr(teacher, "encode") and hasattr(teacher, "dim") and hasattr(teacher, "id")):
        raise EmbedkdError(f"cannot use {type(teacher).__name__} as a teacher")
    return MemoEncoder(
        CachedTeacherEncoder(teacher, cache_dir=cache_dir, batch_size=batch_size, show_progress=show_progress)
    )
