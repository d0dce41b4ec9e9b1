"""Tests for embedkd.encoders: roles, and a SentenceTransformer student as an Encoder."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.encoders import SentenceTransformerEncoder, check_role
from embedkd.errors import EmbedkdError
from embedkd.teachers import SentenceTransformerTeacher

TEXTS = ["what is a cat", "cats are small felines", "a third text"]


@pytest.fixture(scope="module")
def prompted(tiny_st_factory):
    """A tiny model with query/document prompts and a default prompt that only plain encode applies."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        tiny_st_factory(),
        device="cpu",
        prompts={"query": "query: ", "document": "passage: ", "other": "other: "},
        default_prompt_name="other",
    )


def test_check_role():
    assert (check_role("query"), check_role("document"), check_role(None)) == (
        "query",
        "document",
        "document",
    )
    with pytest.raises(EmbedkdError, match="unknown role 'passage'; expected one of query, document"):
        check_role("passage")


def test_student_encoder_routes_each_role(prompted):
    enc = SentenceTransformerEncoder(prompted, "tiny", batch_size=2)
    assert (enc.id, enc.dim) == ("tiny", 32)
    query, doc, plain = enc.encode(TEXTS, "query"), enc.encode(TEXTS, "document"), enc.encode(TEXTS, None)
    assert query.dtype == np.float32 and query.shape == (3, 32)
    np.testing.assert_allclose(query, prompted.encode(["query: " + t for t in TEXTS], prompt=""), atol=1e-5)
    np.testing.assert_allclose(doc, prompted.encode(["passage: " + t for t in TEXTS], prompt=""), atol=1e-5)
    np.testing.assert_allclose(plain, prompted.encode(["other: " + t for t in TEXTS], prompt=""), atol=1e-5)
    np.testing.assert_allclose(enc.encode(TEXTS), doc, atol=1e-6)  # the protocol's default role
    np.testing.assert_allclose(
        enc.encode(TEXTS, "query", batch_size=1, show_progress=False), query, atol=1e-5
    )
    assert enc.encode([], "query").shape == (0, 32)


def test_teacher_and_student_agree_on_one_role(prompted):
    """The teacher puts the same prompts before a role's texts as the student path, without the default."""
    teacher = SentenceTransformerTeacher(prompted, name="tiny")
    student = SentenceTransformerEncoder(prompted, "tiny")
    for role in ("query", "document"):
        np.testing.assert_allclose(teacher.encode(TEXTS, role), student.encode(TEXTS, role), atol=1e-5)
    # a symmetric input: the teacher has no plain path and embeds it as a document (cache keys agree)
    np.testing.assert_allclose(teacher.encode(TEXTS, None), teacher.encode(TEXTS, "document"), atol=1e-6)
    assert teacher.prompt(None) == teacher.prompt("document") == "passage: "
