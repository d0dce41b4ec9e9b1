"""Cross-encoder teachers: load one and use it as a cached pair scorer.

A cross-encoder reads both texts of a pair at once and outputs logits: 1 for ``regression`` and
``binary`` (a sigmoid logit; a 2-logit binary model is reduced to ``l1 - l0``), 3 for ``nli`` in
:data:`embedkd.methods.dse.labels.NLI_LABELS` order (a model whose ``id2label`` names the NLI classes in another order
is re-ordered). :class:`CrossEncoderTeacher` fits the :class:`embedkd.teachers.Teacher` protocol, its
"texts" being the two sides joined by :data:`PAIR_SEP` and its "vectors" the logits, so
:class:`embedkd.cache.TeacherCache` stores them and the teacher never scores a pair twice.

A teacher that does not exist yet is trained by :mod:`embedkd.methods.dse.teacher_training`.

Example::

    teacher = CrossEncoderTeacher("runs/ce-stsb", task="regression")
    logits = teacher.score_pairs(["A man plays."], ["A man is playing."])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkd.errors import ConfigError, EmbedkdError
from embedkd.hub import resolve_model, weights_digest
from embedkd.methods.dse.labels import NLI_LABELS, PairTask

logger = logging.getLogger(__name__)

# ASCII unit separator: str.split() treats it as whitespace, so no cleaned text can contain it.
PAIR_SEP = "\x1f"


def join_pairs(a: Sequence[str], b: Sequence[str]) -> list[str]:
    """One cache "text" per pair."""
    if len(a) != len(b):
        raise EmbedkdError(f"pair sides differ in length: {len(a)} vs {len(b)}")
    return [f"{x}{PAIR_SEP}{y}" for x, y in zip(a, b)]


def check_num_labels(num_labels: int, task: PairTask | str, name: str) -> None:
    """Raise if a model with ``num_labels`` outputs cannot serve ``task``."""
    task = PairTask.parse(task)
    allowed = {PairTask.REGRESSION: (1,), PairTask.BINARY: (1, 2), PairTask.NLI: (3,)}[task]
    if num_labels not in allowed:
        raise ConfigError(
            f"teacher {name} outputs {num_labels} logit(s) but --task {task.value} needs "
            + " or ".join(map(str, allowed))
        )


def load_cross_encoder(spec: str, task: PairTask | str, *, max_length: int | None = None, device=None):
    """Load a sentence-transformers ``CrossEncoder`` by path or id and check it fits ``task``."""
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(resolve_model(spec), device=device, max_length=max_length)
    check_num_labels(model.num_labels, task, repr(spec))
    return model


class CrossEncoderTeacher:
    """A cross-encoder as a cached pair scorer (Teacher protocol: "texts" are joined pairs).

    Args:
        model: path/id of a cross-encoder, or a loaded ``CrossEncoder``.
        task: the pair task; decides how many logits are kept.
        max_length: truncate pairs to this many tokens (part of :attr:`id`).
        cache_dir: teacher cache root (default ``~/.cache/embedkd/teacher``).
    """

    def __init__(
        self,
        model,
        task: PairTask | str,
        *,
        max_length: int | None = None,
        cache_dir: str | Path | None = None,
        device: str | None = None,
    ) -> None:
        self.task = PairTask.parse(task)
        if isinstance(model, str):
            path = resolve_model(model)
            self.model = load_cross_encoder(path, self.task, max_length=max_length, device=device)
            name = f"{model}#{weights_digest(path)}" if Path(path).is_dir() else model
        else:
            self.model, name = (
                model,
                getattr(model, "model_card_data", None) and str(model.model_card_data.base_model or "model"),
            )
            check_num_labels(self.model.num_labels, self.task, repr(name))
        self.cache_dir = cache_dir
        self.dim = self.task.num_outputs
        self._order = self._nli_order()
        self.id = f"ce:{name}@len{self.model.max_length}:{self.task.value}"

    def _nli_order(self) -> list[int] | None:
        if self.task is not PairTask.NLI:
            return None
        names = [str(self.model.config.id2label.get(i, "")).lower() for i in range(3)]
        if sorted(names) != sorted(NLI_LABELS):
            return None  # unnamed classes (LABEL_0...): assume our order, as our trainer writes it
        return [names.index(label) for label in NLI_LABELS]

    def prompt(self, role: str) -> str:
        return ""

    def encode(
        self, texts: Sequence[str], role: str = "document", *, batch_size: int = 32, show_progress=False
    ) -> np.ndarray:
        """Logits of joined pairs (the Teacher protocol's ``encode``)."""
        import torch

        pairs = [tuple(t.split(PAIR_SEP, 1)) for t in texts]
        logits = self.model.predict(
            pairs,
            batch_size=batch_size,
            activation_fn=torch.nn.Identity(),
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        logits = np.asarray(logits, dtype=np.float32).reshape(len(pairs), -1)
        if self.task is PairTask.BINARY and logits.shape[1] == 2:
            logits = logits[:, 1:2] - logits[:, 0:1]
        if self._order is not None:
            logits = logits[:, self._order]
        return logits

    def score_pairs(
        self, a: Sequence[str], b: Sequence[str], *, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        """Logits ``(n, dim)`` of pairs ``(a[i], b[i])``, through the teacher cache."""
        from embedkd.cache import TeacherCache

        cache = TeacherCache.for_teacher(self, self.cache_dir)
        return cache.encode(
            self, join_pairs(a, b), "document", batch_size=batch_size, show_progress=show_progress
        )
