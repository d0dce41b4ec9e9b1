"""``embedkd export``: a student as one ONNX / OpenVINO graph (fp32 or int8) for fast queries, checked.

The exported directory keeps the original SentenceTransformer files (it still loads with
``SentenceTransformer(DIR)``) and adds the graphs where sentence-transformers' own backends put them
(``onnx/model.onnx``, ``onnx/model_qint8.onnx``; ``openvino/openvino_model.xml``,
``openvino/openvino_model_qint8_quantized.xml``) plus ``embedkd_export.json``, which
:class:`~embedkd.onnx_encoder.OnnxEncoder` reads. Before anything is kept, every graph is run on
held-out texts and its mean cosine to the float PyTorch model must reach ``min_cosine``; otherwise the
export is refused and nothing is left behind (it is written beside ``output`` and moved into place last).

Default threshold, measured (mean cosine to the float model on 256 held-out stdlib-docs texts, as
``embedkd export MODEL --quantize int8 [--no-per-channel] --output DIR`` prints it; docs/export.md): ONNX
fp32 1.000 for every model; ONNX int8 with per-channel weight scales 0.993 (all-MiniLM-L6-v2), 0.996
(MiniLM with a 384->768 ``Dense`` projection), 0.992 (a 3-layer mpnet LEAF student), 1.000 (a 2-layer 32-d
test model); OpenVINO int8 0.997 (MiniLM); per-tensor scales 0.962, 0.980 and 0.821. So 0.98 keeps every
per-channel graph with margin and refuses the per-tensor ones that drifted.

Example::

    from embedkd.export import export_model
    report = export_model("runs/leaf-minilm", "runs/leaf-minilm-onnx", quantize="int8")
    report.cosine_to_float  # e.g. 0.993
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from embedkd.config import _normalise, check_positive, option
from embedkd.errors import ConfigError, EmbedkdError
from embedkd.export_check import ExportRefusedError, measure, reference_vectors, write_card
from embedkd.export_graph import (
    ONNX_FILE,
    ONNX_INT8_FILE,
    OPENVINO_FILE,
    OPENVINO_INT8_FILE,
    check_exportable,
    convert_openvino,
    down_projections,
    export_onnx,
    quantize_onnx,
    quantize_openvino,
    require,
)
from embedkd.onnx_encoder import EXPORT_FILE, read_export_info, write_export_info

logger = logging.getLogger(__name__)

DEFAULT_MIN_COSINE = 0.98
EXPORT = "export"
# Left out of the copy of the model folder: training checkpoints and an earlier export's graphs.
NOT_COPIED = ("checkpoint*", "checkpoints", "onnx", "openvino", EXPORT_FILE, ".*")


class ExportFormat(str, Enum):
    """The runtime the graph is written for."""

    ONNX = "onnx"
    OPENVINO = "openvino"


class Quantization(str, Enum):
    """Weight quantization of the exported graph (unset: fp32 only)."""

    INT8 = "int8"


@dataclass(frozen=True)
class ExportConfig:
    """Everything one export needs (the ``embedkd export`` options are generated from these fields)."""

    model: str = option(
        "", "the model to export: local dir, Hugging Face id or offline package id", cli=False
    )
    output: str = option(
        "", "output directory (new, empty, or an earlier export, which is replaced)", group=EXPORT
    )
    format: ExportFormat = option(ExportFormat.ONNX, "runtime of the exported graph", group=EXPORT)
    quantize: Quantization | None = option(
        None,
        "int8: also write an int8 graph (ONNX: dynamic, per-channel weights; OpenVINO: calibrated)",
        group=EXPORT,
    )
    per_channel: bool = option(
        True,
        "ONNX int8 with one scale per tensor instead of per channel (less faithful)",
        flag="--no-per-channel",
        group=EXPORT,
    )
    calibration_data: str | None = option(
        None,
        "text file (or any embedkd data source) split into calibration and held-out check texts "
        "(default: the built-in stdlib-docs corpus); never pass evaluation queries",
        group=EXPORT,
    )
    teacher: str | None = option(
        None, "also report the cosine to this teacher on the held-out texts", group=EXPORT
    )
    min_cosine: float = option(
        DEFAULT_MIN_COSINE,
        "refuse the export when a graph's mean cosine to the float model is below this",
        group=EXPORT,
    )
    check_texts: int = option(256, "held-out texts for the cosine check", group=EXPORT)
    calibration_texts: int = option(300, "most calibration texts (OpenVINO int8)", group=EXPORT)
    cache_dir: str | None = option(None, "teacher cache directory (with --teacher)", group=EXPORT)

    def __post_init__(self) -> None:
        _normalise(self)  # strings to enums, paths to strings: as every config does
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value."""
        if not self.output:
            raise ConfigError("--output is required")
        if not 0 < self.min_cosine <= 1:
            raise ConfigError(f"--min-cosine must be in (0, 1], got {self.min_cosine}")
        check_positive(self, "check_texts", "calibration_texts")


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote and measured (``info`` is ``embedkd_export.json``)."""

    output: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def cosine_to_float(self) -> float:
        """Mean held-out cosine of the default graph (int8 when one was made) to the float model."""
        return float(self.info["cosine_to_float"])


def export_model(
    model: Any,
    output: str | Path,
    *,
    format: str = "onnx",
    quantize: str | None = None,
    calibration_data: str | None = None,
    teacher: str | None = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
    heldout_texts: Sequence[str] | None = None,
    **options: Any,
) -> ExportReport:
    """Export ``model`` (a path/id or a loaded ``SentenceTransformer``) for a fast runtime, checked.

    Args:
        model: the model to export; its projection (``Dense``) and normalisation are kept.
        output: the directory to write.
        format: ``onnx`` or ``openvino``.
        quantize: ``int8`` adds an int8 graph beside the fp32 one.
        calibration_data: texts for calibration and the held-out check (default: stdlib-docs).
        teacher: also measure the cosine to this teacher (through the teacher cache).
        min_cosine: every graph's mean held-out cosine to the float model must reach this.
        heldout_texts: the check texts themselves (overrides the split of the calibration data).
        **options: further :class:`ExportConfig` fields (``per_channel``, ``check_texts``, ...).

    Raises:
        EmbedkdError: not a model, a format whose runtime is missing, or a graph below ``min_cosine``
            (then nothing is written).
    """
    name = str(model) if isinstance(model, (str, Path)) else "<in-memory model>"
    config = ExportConfig(
        model=name,
        output=str(output),
        format=format,
        quantize=quantize,
        calibration_data=calibration_data,
        teacher=teacher,
        min_cosine=min_cosine,
        **options,
    )
    return run_export(
        config, model=None if isinstance(model, (str, Path)) else model, heldout_texts=heldout_texts
    )


def run_export(
    config: ExportConfig, *, model: Any = None, heldout_texts: Sequence[str] | None = None
) -> ExportReport:
    """Run one export (see :func:`export_model`); ``model`` is a loaded model to use instead of ``config.model``."""
    require("onnx")
    require("onnxruntime")
    if config.format is ExportFormat.OPENVINO:
        require("openvino")
        if config.quantize:
            require("nncf")
    source = None if model is not None else model_folder(config.model)
    output = _check_output(Path(config.output).expanduser(), source)
    calibration, check = split_texts(config, heldout_texts)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.export-", dir=output.parent))
    try:
        model = _copy_and_load(source, model, staging)
        info = _write_graphs(model, staging, config, calibration)
        source = "given texts" if heldout_texts is not None else config.calibration_data or "stdlib-docs"
        info.update(_checked(reference_vectors(model, check), staging, info, config, check, source))
        write_export_info(staging, info)
        write_card(staging, info)
        _place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported %s to %s (cosine to float %.4f)", config.model, output, info["cosine_to_float"])
    return ExportReport(output, info)


def _checked(
    reference, staging: Path, info: dict, config: ExportConfig, check: list[str], source: str
) -> dict:
    """The held-out check; an ONNX int8 graph that fails it is made again with its feed-forward
    down-projections in float (:func:`~embedkd.export_graph.down_projections`) and checked once more."""
    try:
        return measure(reference, staging, info, config, check, source)
    except ExportRefusedError as exc:
        if config.format is not ExportFormat.ONNX or set(exc.files) != {ONNX_INT8_FILE}:
            raise
        keep = down_projections(staging / ONNX_FILE)
        if not keep:
            raise
        logger.info(
            "%s: mean cosine %.4f < %s; quantizing again with %d feed-forward down-projections in float",
            ONNX_INT8_FILE,
            exc.files[ONNX_INT8_FILE],
            config.min_cosine,
            len(keep),
        )
        quantize_onnx(
            staging / ONNX_FILE, staging / ONNX_INT8_FILE, per_channel=config.per_channel, keep_float=keep
        )
        info["int8_float_nodes"] = len(keep)
        return measure(reference, staging, info, config, check, source)


def model_folder(spec: str) -> Path:
    """The local folder of a model string, checked to hold a SentenceTransformer or transformers model.

    Raises:
        EmbedkdError: the folder holds no model.
    """
    from embedkd.hub import resolve_model

    folder = Path(resolve_model(spec))
    if not folder.is_dir():
        raise EmbedkdError(f"model {spec!r} resolved to {folder}, which is not a local folder")
    if not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
        raise EmbedkdError(f"{folder} is not a model directory (no modules.json or config.json)")
    return folder


def _check_output(output: Path, source: Path | None) -> Path:
    output = output.resolve()
    if source is not None and (output == source or source in output.parents or output in source.parents):
        raise EmbedkdError(f"--output {output} overlaps the model folder {source}; choose another directory")
    if output.exists():
        if not output.is_dir():
            raise EmbedkdError(f"--output {output} is a file; give a directory")
        if any(output.iterdir()) and read_export_info(output) is None:
            raise EmbedkdError(
                f"--output {output} is not empty and is not an earlier export; choose a new directory"
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    return output


def split_texts(config: ExportConfig, heldout: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(calibration texts, held-out check texts): one shuffled source, split so that they never overlap."""
    from embedkd.data import load_texts

    if heldout is not None:
        check = [t for t in heldout if t.strip()]
        if not check:
            raise EmbedkdError("the held-out texts are empty")
        if not (config.quantize and config.format is ExportFormat.OPENVINO):
            return [], check  # only OpenVINO int8 calibrates
    texts = load_texts(config.calibration_data or "stdlib-docs")
    texts = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))]
    if heldout is not None:
        seen = set(check)
        return [t for t in texts if t not in seen][: config.calibration_texts], check
    n_check = max(1, min(config.check_texts, len(texts) // 2))
    return texts[n_check:][: config.calibration_texts], texts[:n_check]


def _copy_and_load(source: Path | None, model: Any, staging: Path) -> Any:
    """Put the SentenceTransformer files into ``staging`` and load them on the CPU for tracing."""
    from sentence_transformers import SentenceTransformer

    if source is not None:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(*NOT_COPIED), dirs_exist_ok=True)
    else:
        model.save(str(staging))
    try:
        loaded = SentenceTransformer(str(staging), device="cpu").eval()
    except (OSError, ValueError, KeyError) as exc:
        raise EmbedkdError(f"cannot load {source or 'the model'} as a SentenceTransformer: {exc}") from exc
    check_exportable(loaded)
    return loaded


def _write_graphs(model: Any, staging: Path, config: ExportConfig, calibration: list[str]) -> dict[str, Any]:
    """Write the graphs of ``config.format``; returns the export record without its measurements."""
    onnx_path = staging / ONNX_FILE
    inputs = export_onnx(model, onnx_path)
    files: dict[str, str] = {"float": ONNX_FILE}
    if config.format is ExportFormat.ONNX:
        if config.quantize:
            quantize_onnx(onnx_path, staging / ONNX_INT8_FILE, per_channel=config.per_channel)
            files["int8"] = ONNX_INT8_FILE
    else:
        convert_openvino(onnx_path, staging / OPENVINO_FILE)
        files = {"float": OPENVINO_FILE}
        if config.quantize:
            batches = _calibration_batches(model, inputs, calibration)
            quantize_openvino(staging / OPENVINO_FILE, staging / OPENVINO_INT8_FILE, batches)
            files["int8"] = OPENVINO_INT8_FILE
        shutil.rmtree(onnx_path.parent)
    return {
        "format": config.format.value,
        "quantization": config.quantize.value if config.quantize else None,
        "per_channel": config.per_channel if config.quantize and config.format is ExportFormat.ONNX else None,
        "int8_float_nodes": 0 if config.quantize and config.format is ExportFormat.ONNX else None,
        "files": {config.format.value: files},
        "inputs": inputs,
        **_tokenization(model, staging),
        "dim": int(model.get_embedding_dimension()),
        "source_model": config.model,
    }


def _tokenization(model: Any, staging: Path) -> dict[str, Any]:
    """How the encoder must tokenize: the tokenizer's folder, length limit, case and prompts."""
    modules = (
        json.loads((staging / "modules.json").read_text()) if (staging / "modules.json").is_file() else []
    )
    first = modules[0].get("path", "") if modules else ""
    return {
        "tokenizer": first,
        "max_seq_length": int(model.max_seq_length or model.tokenizer.model_max_length),
        "do_lower_case": bool(getattr(model[0], "do_lower_case", False)),
        "prompts": dict(model.prompts or {}),
        "default_prompt_name": model.default_prompt_name,
    }


def _calibration_batches(model: Any, inputs: list[str], texts: list[str]) -> list[dict[str, np.ndarray]]:
    prompt = (model.prompts or {}).get("query", "")
    batches = []
    for text in texts:
        batch = model.tokenizer(
            [prompt + text.strip()], truncation=True, max_length=model.max_seq_length, return_tensors="np"
        )
        batches.append({n: np.asarray(batch[n], dtype=np.int64) for n in inputs})
    return batches


def _place(staging: Path, output: Path) -> None:
    """Move the finished export into place; an earlier export (or empty folder) there is replaced."""
    if not output.exists():
        os.replace(staging, output)
        return
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    os.replace(output, old)
    os.replace(staging, output)
    shutil.rmtree(old, ignore_errors=True)
