"""``embedkd export``: whole-forward ONNX graphs (fp32, int8) that keep the projection, checked or refused."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from embedkd.cli import main
from embedkd.errors import ConfigError, EmbedkdError
from embedkd.export import DEFAULT_MIN_COSINE, export_model
from embedkd.onnx_encoder import EXPORT_FILE, OnnxEncoder

HELDOUT = [
    "what causes a fever in children",
    "How do I reset my password?",
    "The heart pumps blood through the arteries and veins of the body.",
    "python list comprehension with a condition",
    "Symptoms of vitamin D deficiency include fatigue and bone pain.",
    "best hiking trails near the coast",
    "The committee approved the budget after a long debate on spending.",
    "convert a string to an integer",
    "Protein folding determines the shape and function of enzymes.",
    "who wrote the theory of general relativity",
    "Open the file in binary mode before reading raw bytes.",
    "effects of caffeine on sleep quality",
]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_tiny_model_exports_fp32_and_int8_that_reload(tiny_st_factory, tmp_path):
    src = tiny_st_factory()
    report = export_model(src, tmp_path / "out", quantize="int8", heldout_texts=HELDOUT)
    out = tmp_path / "out"
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx" / "model_qint8.onnx").is_file()
    info = json.loads((out / EXPORT_FILE).read_text())
    assert info["format"] == "onnx" and info["quantization"] == "int8"
    assert info["min_cosine"] == DEFAULT_MIN_COSINE and info["heldout_texts"] == len(HELDOUT)
    assert report.cosine_to_float == info["cosine_to_float"] >= DEFAULT_MIN_COSINE
    assert "embedkd export" in (out / "README.md").read_text()  # the card records the check
    floats = SentenceTransformer(src, device="cpu").encode(HELDOUT)
    assert np.allclose(SentenceTransformer(str(out), device="cpu").encode(HELDOUT), floats, atol=1e-6)
    fp32 = OnnxEncoder(out, quantized=False).encode(HELDOUT, "query")
    assert np.allclose(fp32, floats, atol=1e-4)
    assert OnnxEncoder(out).quantized  # the int8 graph by default when the export made one


def test_packaged_minilm_int8_stays_close(minilm_path, tmp_path):
    report = export_model(minilm_path, tmp_path / "minilm", quantize="int8", heldout_texts=HELDOUT)
    by_file = report.info["cosine_to_float_by_file"]
    assert by_file["onnx/model.onnx"]["mean"] > 0.9999
    assert by_file["onnx/model_qint8.onnx"]["mean"] >= DEFAULT_MIN_COSINE
    encoder = OnnxEncoder(tmp_path / "minilm")
    assert encoder.dim == 384 and encoder.id.startswith("onnx-int8:")


def test_projection_survives_export(tiny_st_factory, tmp_path):
    """A LEAF student's Dense projection is part of the graph: its output stays in the teacher's dimension."""
    from embedkd.students import add_projection

    student = add_projection(SentenceTransformer(tiny_st_factory(), device="cpu"), 48)
    report = export_model(student, tmp_path / "proj", heldout_texts=HELDOUT)
    encoder = OnnxEncoder(tmp_path / "proj")
    vecs = encoder.encode(HELDOUT, "query")
    assert report.info["dim"] == encoder.dim == vecs.shape[1] == 48
    assert _cos(vecs, student.encode(HELDOUT)).min() > 0.9999


def test_teacher_cosine_is_reported(tiny_st_factory, tmp_path):
    src = tiny_st_factory()
    report = export_model(
        src, tmp_path / "t", teacher=src, heldout_texts=HELDOUT, cache_dir=str(tmp_path / "c")
    )
    assert report.info["cosine_to_teacher"]["float"] == pytest.approx(1.0, abs=1e-4)


def test_refusal_leaves_nothing_and_keeps_an_earlier_export(tiny_st_factory, tmp_path, capsys):
    src, out = tiny_st_factory(), tmp_path / "out"
    export_model(src, out, heldout_texts=HELDOUT)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(EmbedkdError, match="below --min-cosine"):
        export_model(src, out, quantize="int8", min_cosine=1.0, heldout_texts=HELDOUT)
    assert sorted(p.name for p in out.rglob("*")) == before  # the earlier export is untouched
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(HELDOUT) + "\n")
    fresh = tmp_path / "fresh"
    args = ["--quantize", "int8", "--min-cosine", "1.0", "--calibration-data", str(texts)]
    rc = main(["export", src, *args, "--output", str(fresh)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: export refused")
    assert {p.name for p in tmp_path.iterdir()} == {"out", "texts.txt"}  # no staging dir left


def test_bad_input_is_one_clear_error(tiny_st_factory, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--format must be one of onnx, openvino"):
        export_model(tiny_st_factory(), tmp_path / "x", format="tflite")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    rc = main(["export", str(empty), "--output", str(tmp_path / "y")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert rc == 2 and len(err) == 1 and "not a model directory" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["export", str(empty), "--format", "tflite", "--output", str(tmp_path / "y")])
    assert exc.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", tiny_st_factory()]) == 2  # --output missing
    assert capsys.readouterr().err.strip() == "error: --output is required"


def test_missing_openvino_names_the_package(tiny_st_factory, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(EmbedkdError, match="'openvino' package is not installed; install it with `pip"):
        export_model(tiny_st_factory(), tmp_path / "ov", format="openvino", heldout_texts=HELDOUT)
    assert not (tmp_path / "ov").exists()


def test_openvino_fp32_matches_the_float_model(tiny_st_factory, tmp_path):
    pytest.importorskip("openvino")
    from embedkd.onnx_encoder import OpenVinoEncoder

    src = tiny_st_factory()
    report = export_model(src, tmp_path / "ov", format="openvino", heldout_texts=HELDOUT)
    assert report.info["files"] == {"openvino": {"float": "openvino/openvino_model.xml"}}
    assert not (tmp_path / "ov" / "onnx").exists()
    vecs = OpenVinoEncoder(tmp_path / "ov").encode(HELDOUT, "query")
    assert np.allclose(vecs, SentenceTransformer(src, device="cpu").encode(HELDOUT), atol=1e-4)


def test_int8_below_threshold_is_made_again_with_down_projections_in_float(
    tiny_st_factory, tmp_path, monkeypatch
):
    """A 12-layer model's int8 graph drifts (mpnet: 0.882); the export retries with the FFN
    down-projections in float before refusing."""
    import embedkd.export as export
    from embedkd.export_check import ExportRefusedError
    from embedkd.export_graph import ONNX_INT8_FILE, down_projections

    calls, real = [], export.measure

    def first_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ExportRefusedError("below", {ONNX_INT8_FILE: 0.5})
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "measure", first_fails)
    report = export_model(tiny_st_factory(), tmp_path / "out", quantize="int8", heldout_texts=HELDOUT)
    assert len(calls) == 2 and report.info["int8_float_nodes"] == 2  # one per layer of the tiny model
    assert len(down_projections(tmp_path / "out" / "onnx" / "model.onnx")) == 2
