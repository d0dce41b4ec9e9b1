"""Matryoshka truncation and quantization codes, checked value by value."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.errors import ConfigError
from eval.config import EvalConfig, Mode, Precision
from eval.sweeps import OutputTransform, calibrate, quantize_codes, truncate


def test_truncate_renormalizes():
    out = truncate(np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]]), 2)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_calibrate_on_truncated_documents():
    ranges = calibrate(np.array([[3.0, 4.0, 9.0], [-4.0, 3.0, 9.0]]), 2)
    np.testing.assert_allclose(ranges, [[-0.8, 0.6], [0.6, 0.8]])


def test_int8_and_uint8_codes_rank_alike():
    emb = np.array([[-1.0, 0.0], [0.5, 0.5], [0.0, 0.9]], dtype=np.float32)
    ranges = np.array([[-1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    int8 = quantize_codes(emb, "int8", ranges)
    # floor((x - start) / ((max - start) / 255)) - 128, clipped to [0, 255] before the shift
    np.testing.assert_array_equal(int8, [[-128, -128], [63, -1], [-1, 101]])
    np.testing.assert_array_equal(quantize_codes(emb, "uint8", ranges), int8)


def test_binary_codes_are_signs():
    emb = np.array([[0.5, -0.1, 0.0, 2.0, -3.0, 1.0, 1.0, -1.0, 0.3]], dtype=np.float32)
    expected = [[1, -1, -1, 1, -1, 1, 1, -1, 1]]
    np.testing.assert_array_equal(quantize_codes(emb, "binary"), expected)
    np.testing.assert_array_equal(quantize_codes(emb, Precision.UBINARY), expected)


def test_output_transform():
    emb = np.array([[3.0, 4.0, -1.0]], dtype=np.float32)
    assert OutputTransform().is_identity
    np.testing.assert_array_equal(OutputTransform()(emb), emb)  # identity: the vectors unchanged
    np.testing.assert_array_equal(OutputTransform(dim=2, precision=Precision.BINARY)(emb), [[1, 1]])
    assert OutputTransform(dim=256, precision=Precision.INT8).label == "256d/int8"


def test_config_parsing_and_validation():
    cfg = EvalConfig(
        model="m",
        teacher="t",
        tasks="beir:x, sts:y",
        modes="asym,student",
        dims="128,768,128",
        precisions="INT8",
    )
    assert cfg.tasks == ("beir:x", "sts:y")
    assert cfg.modes == (Mode.ASYM, Mode.STUDENT)
    assert cfg.dims == (768, 128)
    assert cfg.precisions == (Precision.INT8,)
    with pytest.raises(ConfigError, match="unknown mode 'both'; choose from student, teacher, asym"):
        EvalConfig(model="m", tasks="x", modes="both")
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        EvalConfig(model="m", tasks="x", precisions="fp16")
    with pytest.raises(ConfigError, match="--dims value 'big' is not an integer"):
        EvalConfig(model="m", tasks="x", dims="big")
    with pytest.raises(ConfigError, match="--dims value 0 must be a positive integer"):
        EvalConfig(model="m", tasks="x", dims="0")
    with pytest.raises(ConfigError, match="mode asym, teacher needs a --teacher"):
        EvalConfig(model="m", tasks="x", modes="teacher,asym")
    with pytest.raises(ConfigError, match="no --tasks given"):
        EvalConfig(model="m", tasks="")
