"""The ONNX query encoder: the model's prompts and length limit, batching, errors; the backend choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from embedkd.backends import exported_folder, load_query_encoder, parse_backend
from embedkd.errors import ConfigError, EmbedkdError
from embedkd.export import export_model
from embedkd.onnx_encoder import EXPORT_FILE, OnnxEncoder, load_exported_encoder

TEXTS = [
    "short",
    "a query about heart disease",
    "Protein folding determines the shape and function of enzymes in the cell.",
    "convert a string to an integer in python",
    "x " * 150,  # longer than the tiny model's 64 tokens: cut, as sentence-transformers cuts it
]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def prompted(tmp_path_factory, tiny_st_factory):
    """A tiny model with query/document prompts, saved and exported (fp32 and int8)."""
    root = tmp_path_factory.mktemp("prompted")
    model = SentenceTransformer(tiny_st_factory(seed=3), device="cpu")
    model.prompts = {"query": "query: ", "document": "passage: "}
    model.save(str(root / "st"))
    export_model(str(root / "st"), root / "onnx", quantize="int8", heldout_texts=TEXTS)
    return SentenceTransformer(str(root / "st"), device="cpu"), root


def test_roles_use_the_model_prompts_and_length(prompted):
    model, root = prompted
    encoder = OnnxEncoder(root / "onnx", quantized=False)
    assert np.allclose(encoder.encode(TEXTS, "query"), model.encode_query(TEXTS), atol=1e-4)
    assert np.allclose(encoder.encode(TEXTS, "document"), model.encode_document(TEXTS), atol=1e-4)
    assert not np.allclose(encoder.encode(TEXTS[:1], "query"), encoder.encode(TEXTS[:1], "document"))
    assert encoder.truncated(TEXTS) == [False, False, False, False, True]
    with pytest.raises(EmbedkdError, match="unknown role"):
        encoder.encode(TEXTS, "passage")


def test_small_batches_keep_the_input_order(prompted):
    _, root = prompted
    encoder = OnnxEncoder(root / "onnx", quantized=False)  # int8 activation scales depend on the batch
    whole = encoder.encode(TEXTS, "query", batch_size=64)
    assert whole.dtype == np.float32 and whole.shape == (len(TEXTS), encoder.dim)
    assert np.allclose(encoder.encode(TEXTS, "query", batch_size=2), whole, atol=1e-5)
    assert encoder.encode([], "query").shape == (0, encoder.dim)


def test_not_an_export_and_missing_graphs_are_clear_errors(prompted, tmp_path):
    _, root = prompted
    with pytest.raises(EmbedkdError, match="is not an exported model .* run `embedkd export` first"):
        OnnxEncoder(root / "st")
    with pytest.raises(EmbedkdError, match="no openvino float graph"):
        load_exported_encoder(root / "onnx", "openvino")
    with pytest.raises(EmbedkdError, match="unknown backend 'tflite'"):
        load_exported_encoder(root / "onnx", "tflite")
    (tmp_path / EXPORT_FILE).write_text("{not json")
    with pytest.raises(EmbedkdError, match="export the model again"):
        OnnxEncoder(tmp_path)


def test_backends_export_a_plain_model_once_into_the_cache(tiny_st_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDKD_CACHE", str(tmp_path / "cache"))
    src = tiny_st_factory()
    folder = exported_folder(src, "onnx", quantize="int8")
    assert folder.parent == tmp_path / "cache" / "exported"
    stamp = (folder / EXPORT_FILE).stat().st_mtime_ns
    encoder = load_query_encoder(src, "torch", quantize="int8")  # the old eager int8 path, now ONNX int8
    assert encoder.id == f"onnx-int8:{src}" and (folder / EXPORT_FILE).stat().st_mtime_ns == stamp
    assert json.loads((folder / EXPORT_FILE).read_text())["heldout_source"] == "stdlib-docs"
    floats = SentenceTransformer(src, device="cpu").encode(TEXTS)
    assert _cos(encoder.encode(TEXTS, "query"), floats).min() > 0.98
    with pytest.raises(ConfigError, match="--backend onnx runs on the CPU; drop --device cuda"):
        load_query_encoder(src, "onnx", device="cuda")
    with pytest.raises(ConfigError, match="--backend must be one of torch, onnx, openvino, got 'tpu'"):
        parse_backend("tpu")


def test_eval_runs_an_exported_student(prompted):
    from eval.encoders import load_student_encoder

    model, root = prompted
    memo = load_student_encoder(str(root / "onnx"), backend="onnx")
    assert memo.id.startswith("onnx-int8:") and memo.dim == model.get_embedding_dimension()
    assert _cos(memo.encode(TEXTS, "query"), model.encode_query(TEXTS)).min() > 0.98
