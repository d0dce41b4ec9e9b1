"""One SentenceTransformer forward as one runtime graph: ONNX (fp32, int8) and OpenVINO (fp32, int8).

The whole forward — transformer, pooling, any ``Dense`` projection, normalisation — is traced with
``torch.onnx.export`` (the TorchScript exporter, dynamic batch and sequence axes), so a student's
projection head survives and its vectors stay in the teacher's space. ONNX int8 is
``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations quantized at run time, no
calibration); OpenVINO is converted from that ONNX graph and its int8 is ``nncf.quantize`` calibrated
on the user's texts. :mod:`embedkd.export` checks each graph against the float model before keeping it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from embedkd.errors import EmbedkdError

logger = logging.getLogger(__name__)

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
OPSET = 17

# Where sentence-transformers' own backends put their files (kept so that a future move to them is easy).
ONNX_FILE, ONNX_INT8_FILE = "onnx/model.onnx", "onnx/model_qint8.onnx"
OPENVINO_FILE, OPENVINO_INT8_FILE = (
    "openvino/openvino_model.xml",
    "openvino/openvino_model_qint8_quantized.xml",
)

# The pip package that provides each runtime module, named in the error when it is missing.
PACKAGES = {"onnx": "onnx", "onnxruntime": "onnxruntime", "openvino": "openvino", "nncf": "nncf"}


def require(module: str) -> Any:
    """Import an optional runtime module, or raise one clear error naming the package to install.

    Raises:
        EmbedkdError: the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        package = PACKAGES.get(module.split(".")[0], module)
        raise EmbedkdError(
            f"the {package!r} package is not installed; install it with `pip install {package}`"
            + (" nncf" if package == "openvino" else "")
        ) from None


def input_names(tokenizer: Any) -> list[str]:
    """The graph's inputs: the tokenizer's outputs that a text encoder takes, in a fixed order."""
    names = [n for n in TOKEN_INPUTS if n in getattr(tokenizer, "model_input_names", TOKEN_INPUTS)]
    if "input_ids" not in names:
        raise EmbedkdError(f"tokenizer {type(tokenizer).__name__} gives no input_ids; cannot export")
    return names


def check_exportable(model: Any) -> None:
    """Refuse what one traced text graph cannot reproduce.

    Raises:
        EmbedkdError: an asymmetric (``Router``) model, a model with no tokenizer, or pooling that
            drops prompt tokens while the model has prompts.
    """
    kinds = {type(m).__name__ for m in model.modules()}
    if "Router" in kinds:
        raise EmbedkdError(
            "cannot export an asymmetric (Router) model as one graph; export its student folder instead"
        )
    if getattr(model, "tokenizer", None) is None:
        raise EmbedkdError("the model has no text tokenizer; only text models can be exported")
    prompts = [p for p in (getattr(model, "prompts", None) or {}).values() if p]
    if prompts and any(getattr(m, "include_prompt", True) is False for m in model.modules()):
        raise EmbedkdError(
            "the model's pooling excludes prompt tokens (include_prompt=False), which the exported graph "
            "cannot reproduce; export a model whose pooling includes the prompt"
        )


def export_onnx(model: Any, path: Path) -> list[str]:
    """Trace ``model`` (a SentenceTransformer on the CPU) into an fp32 ONNX graph at ``path``.

    Returns:
        the graph's input names.
    """
    import torch

    names = input_names(model.tokenizer)
    sample = model.tokenizer(
        ["a short text", "a somewhat longer text to trace the graph with"], padding=True, return_tensors="pt"
    )
    graph = _as_graph(model, names).eval()
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {OUTPUT_NAME: {0: "batch"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent branches fixed at trace time
        torch.onnx.export(
            graph,
            tuple(sample[n] for n in names),
            str(path),
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    logger.info("exported the whole forward to %s (inputs %s)", path, ", ".join(names))
    return names


def _as_graph(model: Any, names: Sequence[str]) -> Any:
    """``model`` as a module taking positional token tensors (what the tracer feeds) instead of a dict."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(dict(zip(names, inputs)))[OUTPUT_NAME]

    return SentenceEmbedding()


def down_projections(path: Path) -> list[str]:
    """The MatMul nodes whose constant weight narrows its input (``[in, out]`` with in > out).

    In a transformer these are the feed-forward down-projections, whose inputs (the activations after
    GELU) carry outliers that one dynamic int8 scale per tensor cannot hold; keeping them in float is
    what brings a 12-layer model back (all-mpnet-base-v2: mean cosine 0.882 with every MatMul in int8,
    0.991 with these in float). Found by shape, not by name, so any architecture works.
    """
    onnx = require("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    found = []
    for node in graph.node:
        dims = shapes.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if dims and len(dims) == 2 and dims[0] > dims[1]:
            found.append(node.name)
    return found


def quantize_onnx(
    source: Path, target: Path, *, per_channel: bool = True, keep_float: Sequence[str] = ()
) -> None:
    """int8 weights with dynamic activation quantization (no calibration data needed).

    Per-channel weight scales matter: on 256 held-out stdlib-docs texts, per-tensor scales gave a mean
    cosine to the float model of 0.962 (all-MiniLM-L6-v2) and 0.821 (a 3-layer mpnet LEAF student),
    per-channel 0.993 and 0.992. ``keep_float`` names nodes to leave in float
    (:func:`down_projections`).
    """
    require("onnx")
    quantization = require("onnxruntime.quantization")
    # The quantizer logs every node it skips (and advice) through the root logger.
    with _root_logging_at(logging.ERROR):
        quantization.quantize_dynamic(
            str(source),
            str(target),
            weight_type=quantization.QuantType.QInt8,
            per_channel=per_channel,
            nodes_to_exclude=list(keep_float),
        )
    logger.info(
        "quantized %s -> %s (int8 weights, per_channel=%s, %d nodes kept in float)",
        source.name,
        target.name,
        per_channel,
        len(keep_float),
    )


@contextlib.contextmanager
def _root_logging_at(level: int) -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(max(before, level))
    try:
        yield
    finally:
        root.setLevel(before)


def convert_openvino(source: Path, target: Path) -> None:
    """Convert the fp32 ONNX graph ``source`` to OpenVINO IR ``target`` (weights kept in fp32)."""
    ov = require("openvino")
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(source)), str(target), compress_to_fp16=False)
    logger.info("converted %s -> %s", source.name, target)


def quantize_openvino(source: Path, target: Path, calibration: Sequence[dict]) -> None:
    """Static int8 (weights and activations) with ``nncf``, calibrated on tokenized user texts."""
    ov, nncf = require("openvino"), require("nncf")
    if not calibration:
        raise EmbedkdError("OpenVINO int8 needs calibration texts; give --calibration-data")
    model = ov.Core().read_model(str(source))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(list(calibration)),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
    )
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    logger.info(
        "quantized %s -> %s (int8, %d calibration batches)", source.name, target.name, len(calibration)
    )
