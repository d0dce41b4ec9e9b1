"""``embedkd serve --quantize int8`` / ``--backend onnx``: real servers whose query encoder runs ONNX Runtime."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from serve_helpers import Server, build_tiny_index


@pytest.mark.e2e
def test_int8_server_answers_with_vectors_close_to_the_float_student(tmp_path, tiny_st_factory):
    teacher_path, student_path = tiny_st_factory(hidden=32, seed=0), tiny_st_factory(hidden=32, seed=1)
    build_tiny_index(tmp_path, teacher_path, 12)
    args = ["--index-dir", str(tmp_path / "idx"), "--student", student_path, "--quantize", "int8"]
    env = {"EMBEDKD_CACHE": str(tmp_path / "embedkd-cache")}  # the ONNX int8 export made once, kept here
    server = Server([*args, "--threads", "1"], tmp_path / "server.log", env=env).wait_ready()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            texts = ["heart disease cohort", "protein folding study"]
            got = client.post("/embed", json={"texts": texts}).json()
            hits = client.post("/search", json={"query": texts[0], "k": 3}).json()
    finally:
        server.stop()
    assert "int8" in server.tail()  # the log says the query encoder is quantized
    served = np.asarray(got["embeddings"], dtype=np.float32)
    floats = SentenceTransformer(student_path, device="cpu").encode(texts)
    cos = np.sum(served * floats, axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(floats, axis=1))
    assert np.all(cos > 0.98) and not np.allclose(served, floats, atol=1e-6)
    assert len(hits["results"]) == 3


@pytest.mark.e2e
def test_onnx_backend_serves_an_exported_student(tmp_path, tiny_st_factory):
    """An ``embedkd export`` folder served with ``--backend onnx``: its int8 graph answers over HTTP."""
    from embedkd.export import export_model
    from embedkd.onnx_encoder import OnnxEncoder

    teacher_path, student_path = tiny_st_factory(hidden=32, seed=0), tiny_st_factory(hidden=32, seed=1)
    texts = ["heart disease cohort", "protein folding study", "gene expression in cohort 13"]
    export_model(student_path, tmp_path / "student-onnx", quantize="int8", heldout_texts=texts)
    build_tiny_index(tmp_path, teacher_path, 12)
    args = ["--index-dir", str(tmp_path / "idx"), "--student", str(tmp_path / "student-onnx")]
    server = Server([*args, "--backend", "onnx", "--threads", "1"], tmp_path / "server.log").wait_ready()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            got = client.post("/embed", json={"texts": texts}).json()
            hits = client.post("/search", json={"query": texts[0], "k": 3}).json()
    finally:
        server.stop()
    assert "onnx-int8" in server.tail()  # the log names the runtime and graph
    served = np.asarray(got["embeddings"], dtype=np.float32)
    local = OnnxEncoder(tmp_path / "student-onnx").encode(texts, "query")
    cos = np.sum(served * local, axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(local, axis=1))
    assert np.all(cos > 0.999) and len(hits["results"]) == 3
