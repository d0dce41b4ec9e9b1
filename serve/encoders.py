"""The models behind the service: the query encoder (student) and the document teacher.

Both are checked against the index's :class:`~serve.index.IndexMeta` when the service starts: a
student whose output dimension differs from the teacher that built the index, or a teacher that is
not the one that built it, is refused with a clear error instead of returning nonsense scores.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedkd.encoders import SentenceTransformerEncoder, TruncationReport
from embedkd.errors import ConfigError
from serve.index import IndexMeta

if TYPE_CHECKING:
    from embedkd.onnx_encoder import ExportedEncoder
    from embedkd.teachers import Teacher

logger = logging.getLogger(__name__)

FIDELITY_FILE = "embedkd_fidelity.json"
# Ids of real encoders (embedkd.teachers); a method whose "teacher" is not one (ontology) is not checked.
ENCODER_ID_PREFIXES = ("st:", "http:", "precomputed:")


class QueryEncoder(TruncationReport, SentenceTransformerEncoder):
    """The student as the service's query :class:`~embedkd.encoders.Encoder`, plus truncation flags.

    :meth:`encode` embeds queries (the model's ``query`` prompt or route) in one forward pass;
    :meth:`truncated` tells which texts the model's ``max_seq_length`` cuts.

    Args:
        model: the loaded SentenceTransformer.
        name: what to report as the model (path or id); also its :attr:`id`.
    """

    def __init__(self, model, name: str) -> None:
        super().__init__(model, name)
        self.name = name
        self.max_seq_length = int(model.max_seq_length or 512)
        self.tokenizer = model.tokenizer

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = "query",
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` as ``role`` (queries by default), all of them in one forward pass by default."""
        return super().encode(
            texts, role, batch_size=batch_size or max(1, len(texts)), show_progress=show_progress
        )


def load_query_encoder(
    spec: str,
    meta: IndexMeta,
    *,
    device: str | None = None,
    quantize: str | None = None,
    safetensors_only: bool = False,
    backend: str = "torch",
    threads: int | None = None,
) -> QueryEncoder | ExportedEncoder:
    """Load the student (any SentenceTransformer dir or id) and check it fits the index.

    Args:
        spec: the student (directory or model id).
        meta: the index's metadata.
        device: torch device (default CPU).
        quantize: ``int8`` runs the student's ONNX int8 graph (exported once into the cache when the
            folder is not an export; see :mod:`embedkd.backends`); None keeps the backend's default.
        safetensors_only: load the transformer's weights from safetensors only (hot swap).
        backend: ``torch``, ``onnx`` or ``openvino`` (:class:`embedkd.backends.Backend`).
        threads: CPU threads of the ONNX / OpenVINO runtime (None: all cores).

    Raises:
        ConfigError: its output dimension is not the index's (the teacher's) dimension, it records
            another teacher than the index's (:func:`check_student_teacher`), or quantization was
            asked for off the CPU.
    """
    from sentence_transformers import SentenceTransformer

    from embedkd.encoders import resolve_model_checked

    folder = resolve_model_checked(spec, "--student")
    check_student_teacher(folder, meta, spec)
    if backend != "torch" or quantize:
        from embedkd.backends import load_query_encoder as load_fast

        encoder = load_fast(  # one forward pass per micro-batch, as QueryEncoder
            folder, backend, quantize=quantize, device=device, threads=threads, batch_size=1024, name=spec
        )
    else:
        kwargs = {"model_kwargs": {"use_safetensors": True}} if safetensors_only else {}
        encoder = QueryEncoder(SentenceTransformer(folder, device=device or "cpu", **kwargs), spec)
    if encoder.dim != meta.dim:
        raise ConfigError(
            f"student {spec!r} outputs {encoder.dim}-d vectors but the index was built by teacher "
            f"{meta.teacher_id!r} with {meta.dim}-d vectors; serve a student distilled into that "
            f"teacher's space (or one with a projection to {meta.dim} dims)"
        )
    logger.info(
        "query encoder %s: %d-d, max %d tokens%s",
        spec,
        encoder.dim,
        encoder.max_seq_length,
        f", {encoder.id.split(':')[0]}" if backend != "torch" or quantize else "",  # onnx, onnx-int8, ...
    )
    return encoder


def load_index_teacher(spec: str, meta: IndexMeta, *, device: str | None = None) -> Teacher:
    """Load the document teacher for writes and check it is the one that built the index.

    The sequence length recorded in the index is used, so the same string that built the index
    gives the same teacher id (and hits the same teacher cache).

    Raises:
        ConfigError: the teacher's id or dimension differs from the index's.
    """
    from embedkd.teachers import load_teacher

    seq = meta.teacher_max_seq_length if spec == meta.teacher_name else None
    teacher = load_teacher(spec, max_seq_length=seq, device=device)
    if teacher.dim != meta.dim or teacher.id != meta.teacher_id:
        raise ConfigError(
            f"teacher {spec!r} is {teacher.id!r} ({teacher.dim}-d) but the index was built by "
            f"{meta.teacher_id!r} ({meta.dim}-d); pass --teacher {meta.teacher_name!r} or serve read-only"
        )
    return teacher


def recorded_teacher(folder: str | Path) -> str | None:
    """The teacher id a student folder records (``teacher`` in ``embedkd_fidelity.json``), if any.

    Only ids of real encoders count (``st:...``, ``http:...``, ``precomputed:...``): a method whose
    teacher is not an embedding model in the index's space records something else.
    """
    path = Path(folder) / FIDELITY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s (%s); the student's teacher is not checked", path, exc)
        return None
    teacher = data.get("teacher") if isinstance(data, dict) else None
    return teacher if isinstance(teacher, str) and teacher.startswith(ENCODER_ID_PREFIXES) else None


def teacher_identity(teacher_id: str) -> str:
    """The model part of a teacher id: its sequence length (``@seqN``) and output normalisation
    (``:norm``) do not change its vector space, so a student distilled at 64 tokens fits an index
    embedded at 256."""
    return re.sub(r"@seq\d+", "", teacher_id).removesuffix(":norm")


def check_student_teacher(folder: str | Path, meta: IndexMeta, spec: str) -> None:
    """Refuse a student that records a teacher other than the one that built the index.

    Raises:
        ConfigError: the recorded teacher differs (a student with no record is accepted).
    """
    recorded = recorded_teacher(folder)
    if recorded is not None and teacher_identity(recorded) != teacher_identity(meta.teacher_id):
        raise ConfigError(
            f"student {spec!r} was distilled from teacher {recorded!r} but the index was built by "
            f"{meta.teacher_id!r}; its vectors are in another space (serve a student of the index's "
            "teacher, or build the index with the student's teacher)"
        )
