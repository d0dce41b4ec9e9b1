"""Metadata filters → Milvus expressions (no Milvus needed): escaping, lists, refused values."""

from __future__ import annotations

import pytest

from embedkd.errors import ConfigError
from serve.milvus_filter import filter_expression, literal, matches_nothing, quote
from serve.milvus_index import MilvusIndexType, build_params, check_supported, search_params


def test_quote_escapes_everything_that_could_end_a_literal():
    assert quote("plain") == '"plain"'
    assert quote('he said "hi"') == r'"he said \"hi\""'
    assert quote("it's") == '"it\'s"'
    assert quote("a\\b") == r'"a\\b"'
    assert quote("trailing\\") == r'"trailing\\"'  # must not escape the closing quote
    assert quote("line\nbreak\ttab\r") == r'"line\nbreak\ttab\r"'


def test_injection_stays_inside_the_literal():
    expr = filter_expression({"cat": 'x" or id != "'})
    assert expr == r'(metadata["cat"] == "x\" or id != \"")'
    key_attack = filter_expression({'cat"] == "a" or metadata["n': 1})
    assert key_attack == r'(metadata["cat\"] == \"a\" or metadata[\"n"] == 1)'


def test_expression_shapes():
    assert filter_expression(None) == ""
    assert filter_expression({}) == ""
    assert filter_expression({"lang": "en", "year": [2023, 2024]}) == (
        '(metadata["lang"] == "en") and (metadata["year"] == 2023 or metadata["year"] == 2024)'
    )
    assert filter_expression({"ok": True, "x": 0.5}) == '(metadata["ok"] == true) and (metadata["x"] == 0.5)'


@pytest.mark.parametrize("value", [None, {"a": 1}, float("nan"), float("inf"), b"bytes"])
def test_unsupported_values_are_refused_by_name(value):
    with pytest.raises(ConfigError, match="'field'"):
        filter_expression({"field": value})


def test_bad_field_names_and_empty_lists():
    with pytest.raises(ConfigError, match="non-empty strings"):
        filter_expression({"": "x"})
    assert matches_nothing({"a": "x", "b": []})
    assert not matches_nothing({"a": ["x"]}) and not matches_nothing(None)
    with pytest.raises(ConfigError, match="empty list"):
        filter_expression({"b": []})
    assert literal(False) == "false" and literal(-3) == "-3"


def test_index_types_parse_and_check_the_target():
    assert MilvusIndexType.parse("HNSW") is MilvusIndexType.HNSW
    assert MilvusIndexType.parse("ivfpq") is MilvusIndexType.IVF_PQ
    with pytest.raises(ConfigError, match="'annoy'.*expected one of"):
        MilvusIndexType.parse("annoy")
    check_supported(MilvusIndexType.IVF_PQ, lite=False)
    with pytest.raises(ConfigError, match="'ivf_pq' is not offered by Milvus Lite.*Milvus server"):
        check_supported(MilvusIndexType.IVF_PQ, lite=True)


def test_index_parameters():
    assert build_params(MilvusIndexType.FLAT, 384) == {}
    assert build_params(MilvusIndexType.IVF_PQ, 384) == {"nlist": 128, "m": 64, "nbits": 8}
    assert build_params(MilvusIndexType.IVF_PQ, 10)["m"] == 2
    with pytest.raises(ConfigError, match="m=7 must divide the dimension 384"):
        build_params(MilvusIndexType.IVF_PQ, 384, {"m": 7})
    assert search_params(MilvusIndexType.HNSW, 500) == {"ef": 500}  # Milvus refuses ef < k
    assert search_params(MilvusIndexType.IVF_SQ8, 10, {"nprobe": 4}) == {"nprobe": 4}
