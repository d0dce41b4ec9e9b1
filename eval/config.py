"""Settings of one ``embedkd eval`` run: a frozen dataclass, validated in one place.

Example::

    cfg = EvalConfig(model="runs/leaf-minilm", teacher="sentence-transformers/all-mpnet-base-v2",
                     modes="student,teacher,asym", tasks=["beir:../shared/data/beir-scifact"],
                     dims="768,256", precisions="float32,binary", output="runs/eval-scifact")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from embedkd.errors import ConfigError


class Mode(str, Enum):
    """Which encoder embeds queries and documents.

    ``student`` and ``teacher`` embed both sides with one model; ``asym`` embeds queries with the
    student and documents with the teacher, searched in one index.
    """

    STUDENT = "student"
    TEACHER = "teacher"
    ASYM = "asym"


class Precision(str, Enum):
    """Output quantization, as ``sentence_transformers.util.quantize_embeddings`` defines it."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"
    BINARY = "binary"
    UBINARY = "ubinary"


def _parse_enum(enum: type[Enum], values: str | Sequence, what: str) -> tuple:
    items = _split(values)
    if not items:
        raise ConfigError(f"no {what} given; choose from {', '.join(e.value for e in enum)}")
    out = []
    for item in items:
        try:
            out.append(item if isinstance(item, enum) else enum(str(item).strip().lower()))
        except ValueError:
            choices = ", ".join(e.value for e in enum)
            raise ConfigError(f"unknown {what} {item!r}; choose from {choices}") from None
    return tuple(dict.fromkeys(out))


def _split(values: str | Sequence | None) -> list:
    if values is None:
        return []
    if isinstance(values, str):
        return [v for v in (p.strip() for p in values.split(",")) if v]
    return [v for v in values if not (isinstance(v, str) and not v.strip())]


def _parse_dims(values: str | Sequence[int] | None) -> tuple[int, ...] | None:
    items = _split(values)
    if not items:
        return None
    dims = []
    for item in items:
        try:
            dim = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"--dims value {item!r} is not an integer") from None
        if dim < 1:
            raise ConfigError(f"--dims value {dim} must be a positive integer")
        dims.append(dim)
    return tuple(sorted(set(dims), reverse=True))


@dataclass(frozen=True)
class EvalConfig:
    """Everything an evaluation needs; strings are parsed and checked in ``__post_init__``.

    Args:
        model: the student: a model string (local dir, offline-package id, HF id), a loaded
            ``SentenceTransformer``, or any :class:`embedkd.encoders.Encoder`.
        tasks: task specs: ``beir:PATH``, ``sts:PATH``, an MTEB task name, or ``pairs:TASK:PATH``
            (DSE pair tasks, see :mod:`eval.pairs`).
        teacher: the teacher (model string, ``SentenceTransformer`` or ``Teacher``); needed by the
            ``teacher`` and ``asym`` modes, by fidelity and by the ratio column.
        modes: comma-separated string or sequence of :class:`Mode`.
        dims: Matryoshka dims to sweep (truncate + renormalize); ``None`` means full dimension only.
        precisions: output precisions to sweep (:class:`Precision`).
        output: directory for ``results.json``, ``results.md`` and the plots (``None``: nothing written).
        split: evaluation split (BEIR ``qrels/<split>.tsv``, STS-B ``sts-<split>.csv``).
        batch_size: encoding batch size.
        max_seq_length: student max tokens (``None``: the model's own).
        backend: runtime of a student given as a model string: ``torch`` (default), ``onnx`` or
            ``openvino`` (:mod:`embedkd.backends`; a folder that is not an ``embedkd export`` is exported
            once into the cache; an export's int8 graph is used when it has one).
        teacher_max_seq_length: teacher max tokens (part of the teacher-cache key).
        cache_dir: teacher-vector cache directory (default ``~/.cache/embedkd/teacher``).
        fidelity: compute student-teacher fidelity on the task texts.
        plots: write PNG plots.
        mteb_cache: directory of an ``mteb.ResultCache`` to save mteb's results to (``None``: none).
        offline: keep mteb, datasets and huggingface_hub off the network.
        show_progress: progress bars on encoding and evaluation.
        command: the command line recorded in ``results.json``.
        control: pair tasks only: a DSE student trained on the task loss alone (λ = 0), scored as a
            ``control`` row beside the student and the teacher.
    """

    model: object
    tasks: tuple[str, ...]
    teacher: object | None = None
    modes: tuple[Mode, ...] | str = "student"
    dims: tuple[int, ...] | str | None = None
    precisions: tuple[Precision, ...] | str = "float32"
    output: str | None = None
    split: str = "test"
    batch_size: int = 32
    max_seq_length: int | None = None
    teacher_max_seq_length: int | None = None
    backend: str = "torch"
    cache_dir: str | None = None
    fidelity: bool = True
    plots: bool = True
    mteb_cache: str | None = None
    offline: bool = True
    show_progress: bool = True
    command: str | None = field(default=None, compare=False)
    control: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "tasks", tuple(str(t) for t in _split(self.tasks)))
        if not self.tasks:
            raise ConfigError(
                "no --tasks given; use beir:PATH, sts:PATH, pairs:TASK:PATH or an MTEB task name"
            )
        set_(self, "modes", _parse_enum(Mode, self.modes, "mode"))
        set_(self, "precisions", _parse_enum(Precision, self.precisions, "precision"))
        set_(self, "dims", _parse_dims(self.dims))
        if self.model is None or (isinstance(self.model, str) and not self.model.strip()):
            raise ConfigError("no --model given")
        needs_teacher = {Mode.TEACHER, Mode.ASYM} & set(self.modes)
        if needs_teacher and self.teacher is None:
            names = ", ".join(sorted(m.value for m in needs_teacher))
            raise ConfigError(f"mode {names} needs a --teacher")
        if self.control and not any(t.startswith("pairs:") for t in self.tasks):
            raise ConfigError("--control applies to pair tasks (pairs:TASK:PATH) only")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        for name in ("max_seq_length", "teacher_max_seq_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        from embedkd.backends import parse_backend

        set_(self, "backend", parse_backend(self.backend).value)
        if self.backend != "torch" and self.max_seq_length:
            raise ConfigError(
                f"--max-seq-length applies to the torch backend; an exported ({self.backend}) student keeps "
                "the length it was exported with"
            )
        if not self.split or not self.split.strip():
            raise ConfigError("--split must not be empty")
        from embedkd.encoders import check_model_arg

        for name in ("model", "teacher", "control"):  # a bad local folder fails before any task loads
            check_model_arg(getattr(self, name), f"--{name}")
