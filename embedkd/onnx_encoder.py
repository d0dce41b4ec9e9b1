"""Query encoders that run an exported model (``embedkd export``) on ONNX Runtime or OpenVINO, no torch.

Each is an :class:`~embedkd.encoders.Encoder`: it tokenizes with the model's own fast tokenizer (with the
model's prompt for the role and its ``max_seq_length``), runs the one graph that holds the whole forward
(transformer, pooling, projection, normalisation) and returns float32 vectors. The folder's
``embedkd_export.json`` says which graphs exist and how the model tokenizes.

Example::

    encoder = OnnxEncoder("runs/leaf-minilm-onnx")  # the int8 graph when the export made one
    vectors = encoder.encode(["what causes fever?"], "query")
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from embedkd.encoders import DOCUMENT, QUERY, TruncationReport, check_role
from embedkd.errors import EmbedkdError
from embedkd.export_graph import require

logger = logging.getLogger(__name__)

EXPORT_FILE = "embedkd_export.json"


def read_export_info(folder: str | Path) -> dict[str, Any] | None:
    """The ``embedkd_export.json`` of ``folder``, or None when the folder is not an export.

    Raises:
        EmbedkdError: the file exists but cannot be read.
    """
    path = Path(folder) / EXPORT_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EmbedkdError(f"cannot read {path} ({exc}); export the model again") from exc
    if not isinstance(info, dict) or "files" not in info:
        raise EmbedkdError(f"{path} is not an embedkd export record; export the model again")
    return info


def write_export_info(folder: str | Path, info: dict[str, Any]) -> None:
    """Write ``info`` as the ``embedkd_export.json`` of ``folder``."""
    (Path(folder) / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")


def export_file(info: dict[str, Any], backend: str, quantized: bool | None) -> str:
    """The graph of ``backend`` to run: int8 when asked (or, with None, when the export made one).

    Raises:
        EmbedkdError: the export holds no graph for ``backend`` (or no int8 one when asked).
    """
    files = info.get("files", {}).get(backend) or {}
    if quantized is None:
        quantized = "int8" in files
    key = "int8" if quantized else "float"
    if key not in files:
        have = ", ".join(f"{b} {k}" for b, fs in info.get("files", {}).items() for k in fs) or "nothing"
        raise EmbedkdError(f"the export holds no {backend} {key} graph (it has: {have})")
    return files[key]


class ExportedEncoder(TruncationReport):
    """Shared by the runtimes: tokenization, prompts, length-sorted batches, truncation flags.

    Args:
        folder: a directory written by ``embedkd export`` (:func:`embedkd.export.export_model`).
        quantized: run the int8 graph (True), the float one (False) or the int8 one if present (None).
        name: what to report as the model (default: the folder); part of :attr:`id`.
        batch_size: default texts per forward pass.
        show_progress: default for a tqdm bar while encoding.
        threads: runtime CPU threads (None: the runtime's default, all cores).
    """

    backend: ClassVar[str] = ""

    def __init__(
        self,
        folder: str | Path,
        quantized: bool | None = None,
        *,
        name: str | None = None,
        batch_size: int = 32,
        show_progress: bool = False,
        threads: int | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        info = read_export_info(self.folder)
        if info is None:
            raise EmbedkdError(
                f"{self.folder} is not an exported model (no {EXPORT_FILE}); run `embedkd export` first"
            )
        self.info, self.file = info, export_file(info, self.backend, quantized)
        self.quantized = self.file == info["files"][self.backend].get("int8")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder / info.get("tokenizer", "")))
        self.max_seq_length = int(info["max_seq_length"])
        self.inputs = list(info["inputs"])
        self.prompts: dict[str, str] = dict(info.get("prompts") or {})
        self.default_prompt_name = info.get("default_prompt_name")
        self.lower_case = bool(info.get("do_lower_case", False))
        self.dim = int(info["dim"])
        self.name = name or str(self.folder)
        self.id = f"{self.backend}{'-int8' if self.quantized else ''}:{self.name}"
        self.batch_size, self.show_progress = batch_size, show_progress
        self._open(self.folder / self.file, threads)
        logger.info(
            "%s encoder %s (%s, %d-d, max %d tokens)",
            self.backend,
            self.name,
            self.file,
            self.dim,
            self.max_seq_length,
        )

    def _open(self, path: Path, threads: int | None) -> None:
        raise NotImplementedError

    def _run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def prompt(self, role: str | None) -> str:
        """The text put before each input of ``role``, as ``SentenceTransformer.encode_query`` would."""
        if role is not None:
            role = check_role(role)
            if role in (QUERY, DOCUMENT) and role in self.prompts:
                return self.prompts[role]
        return self.prompts.get(self.default_prompt_name or "", "")

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = DOCUMENT,
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` as ``role`` (see :class:`~embedkd.encoders.Encoder`); float32 ``(n, dim)``."""
        from tqdm.auto import tqdm

        texts = list(texts)
        prompt, size = self.prompt(role), batch_size or self.batch_size
        # Longest first, as sentence-transformers does: batches of similar length pad less.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        show = self.show_progress if show_progress is None else show_progress
        starts = range(0, len(texts), size)
        # A disabled tqdm still costs ~60 us to build, on every call: only build one to show it.
        for start in tqdm(starts, desc="encoding") if show else starts:
            rows = order[start : start + size]
            out[rows] = self._run(self._tokenize([prompt + texts[i] for i in rows]))
        return out

    def _tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        texts = [t.strip().lower() if self.lower_case else t.strip() for t in texts]
        batch = self.tokenizer(
            texts,
            padding=True,
            truncation="longest_first",
            max_length=self.max_seq_length,
            return_tensors="np",
        )
        return {n: np.asarray(batch[n], dtype=np.int64) for n in self.inputs}


class OnnxEncoder(ExportedEncoder):
    """An exported model on ONNX Runtime (CPU); see :class:`ExportedEncoder` for the arguments."""

    backend: ClassVar[str] = "onnx"

    def _open(self, path: Path, threads: int | None) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._session.run(None, features)[0], dtype=np.float32)


class OpenVinoEncoder(ExportedEncoder):
    """An exported model on OpenVINO (CPU, fp32 inference precision); see :class:`ExportedEncoder`."""

    backend: ClassVar[str] = "openvino"

    def _open(self, path: Path, threads: int | None) -> None:
        ov = require("openvino")
        # f32: without the hint, CPUs with bf16 units would silently run in bf16 and lose fidelity.
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._lock = threading.Lock()  # one infer request: calls from several threads take turns

    def _run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            result = self._compiled(features)[0]
        return np.asarray(result, dtype=np.float32)


ENCODERS: dict[str, type[ExportedEncoder]] = {"onnx": OnnxEncoder, "openvino": OpenVinoEncoder}


def load_exported_encoder(folder: str | Path, backend: str = "onnx", **kwargs: Any) -> ExportedEncoder:
    """The encoder of ``backend`` (``onnx`` or ``openvino``) over an exported folder.

    Raises:
        EmbedkdError: an unknown backend, a folder that is not an export, or a missing runtime package.
    """
    if backend not in ENCODERS:
        raise EmbedkdError(f"unknown backend {backend!r}; expected one of {', '.join(ENCODERS)}")
    return ENCODERS[backend](folder, **kwargs)
