"""End-to-end evaluation through ``mteb.evaluate`` with deterministic bag-of-words encoders.

Expected scores are worked out by hand from ``eval_fakes`` (vocabulary a b c f d e):

* teacher, float32: q1→d1 rank 1; q2 "c": d3 "a b c c c c" (cos .943) beats d2 "c d" (.707), so d2 is
  rank 2 (nDCG 1/log2 3); q3→d4 rank 1. nDCG@10 = (2 + 1/log2 3)/3 = 0.876977.
* student (weight of "d" 0.1): d2 ≈ "c" (cos .995) beats d3, so every query is rank 1: 1.0.
* asym: student queries are the teacher's queries up to scale, against teacher documents: 0.876977
  (routing the other way round would give the student's 1.0).
* teacher at 4 dims (a b c f): q2 "c" → d2 "c" cos 1: 1.0. Binary: q2 {c} is 1 bit from d2 {c,d}
  and 2 from d3 {a,b,c}: 1.0.
* STS: cosine order p4 < p2 < p5 < p3 < p1, gold order p4 < p2 < p3 < p5 < p1: one adjacent swap,
  Spearman = 1 - 6·2/(5·24) = 0.9.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from eval_fakes import BagOfWords, student, teacher, write_beir, write_sts

from embedkd.errors import ConfigError
from eval import evaluate

TEACHER_NDCG = (2 + 1 / math.log2(3)) / 3  # mteb rounds scores to 5 decimals: compare with abs=1e-5


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    return write_beir(tmp_path_factory.mktemp("data") / "tiny-beir")


@pytest.fixture(scope="module")
def sts(tmp_path_factory):
    return write_sts(tmp_path_factory.mktemp("data") / "tiny-sts")


def _eval(beir_or_sts, tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    kw.setdefault("show_progress", False)
    kw.setdefault("plots", False)
    return evaluate(kw.pop("model", student()), [f"{kw.pop('kind', 'beir')}:{beir_or_sts}"], **kw)


def test_student_teacher_asym_exact_ndcg(beir, tmp_path):
    res = _eval(beir, tmp_path, teacher=teacher(), modes="student,teacher,asym")
    assert res.score("tiny-beir", "teacher") == pytest.approx(TEACHER_NDCG, abs=1e-5)
    assert res.score("tiny-beir", "student") == pytest.approx(1.0, abs=1e-5)
    assert res.score("tiny-beir", "asym") == pytest.approx(TEACHER_NDCG, abs=1e-5)
    assert [r["mode"] for r in res.rows] == ["student", "teacher", "asym"]
    assert not any(r["reference"] for r in res.rows)
    fid = res.fidelity["tiny-beir"]
    assert fid["mean_cosine_queries"] == pytest.approx(1.0)
    assert fid["mean_cosine"] == pytest.approx((6 + 1.1 / math.sqrt(2 * 1.01)) / 7, abs=1e-5)
    assert fid["mse"] == pytest.approx(0.81 / 42, abs=1e-7)
    assert fid["top10_overlap"] == 1.0


def test_all_mteb_metrics_are_kept(beir, tmp_path):
    res = _eval(beir, tmp_path, modes="student")
    scores = res.rows[0]["scores"]
    assert scores["ndcg_at_10"] == pytest.approx(1.0)
    assert scores["main_score"] == scores["ndcg_at_10"]
    assert "recall_at_100" in scores and "mrr_at_10" in scores


def test_sts_exact_spearman_every_mode(sts, tmp_path):
    res = _eval(sts, tmp_path, kind="sts", teacher=teacher(), modes="student,teacher,asym")
    for mode in ("student", "teacher", "asym"):
        assert res.score("tiny-sts", mode) == pytest.approx(0.9, abs=1e-9), mode
    assert res.rows[0]["main_metric"] == "cosine_spearman"


def test_sweeps_dims_and_precisions(beir, tmp_path):
    res = _eval(
        beir,
        tmp_path,
        model=teacher(),
        teacher=teacher(),
        modes="teacher",
        dims="6,4",
        precisions="float32,binary,ubinary",
    )
    assert res.score("tiny-beir", "teacher", 6, "float32") == pytest.approx(TEACHER_NDCG, abs=1e-5)
    assert res.score("tiny-beir", "teacher", 4, "float32") == pytest.approx(1.0, abs=1e-5)
    assert res.score("tiny-beir", "teacher", 6, "binary") == pytest.approx(1.0, abs=1e-5)
    assert res.score("tiny-beir", "teacher", 6, "ubinary") == pytest.approx(1.0, abs=1e-5)
    assert {(r["dim"], r["precision"]) for r in res.rows} == {
        (d, p) for d in (6, 4) for p in ("float32", "binary", "ubinary")
    }


def test_int8_matches_reference_with_document_calibration(beir, tmp_path):
    """int8 and uint8 codes from ranges calibrated on the documents, both sides, ranked by cosine."""
    from sentence_transformers.util.quantization import quantize_embeddings

    res = _eval(beir, tmp_path, model=teacher(), teacher=teacher(), modes="teacher", precisions="int8,uint8")
    t = teacher()
    docs = t.encode(["a b", "c d", "a b c c c c", "e f"])
    queries = t.encode(["a b", "c", "f"])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    ranges = np.vstack((unit(docs).min(0), unit(docs).max(0)))
    qc = quantize_embeddings(unit(queries), "int8", ranges=ranges).astype(np.float32)
    dc = quantize_embeddings(unit(docs), "int8", ranges=ranges).astype(np.float32)
    sims = unit(qc) @ unit(dc).T
    ranks = [int((sims[i] > sims[i, rel]).sum()) + 1 for i, rel in enumerate([0, 1, 3])]
    expected = np.mean([1 / math.log2(r + 1) for r in ranks])
    assert res.score("tiny-beir", "teacher", None, "int8") == pytest.approx(expected, abs=1e-5)
    assert res.score("tiny-beir", "teacher", None, "uint8") == pytest.approx(expected, abs=1e-5)


def test_reference_teacher_row_and_ratios(beir, tmp_path):
    res = _eval(beir, tmp_path, teacher=teacher(), modes="student", output=str(tmp_path / "out"), plots=True)
    assert [(r["mode"], r["reference"]) for r in res.rows] == [("student", False), ("teacher", True)]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["results"][0]["ratio_to_teacher"] == pytest.approx(1 / TEACHER_NDCG, abs=1e-5)
    assert data["versions"]["mteb"] and data["timings"][0]["step"].startswith("load task")
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| tiny-beir | student | 6 | float32 | nDCG@10 | 100.00 | 1.140 | 1.140 |" in md
    assert "| tiny-beir | teacher (reference) | 6 | float32 | nDCG@10 | 87.70 | 1.000 | 1.000 |" in md
    assert (tmp_path / "out" / "plot_tiny-beir_dims.png").stat().st_size > 1000
    assert (tmp_path / "out" / "plot_tiny-beir_precision.png").stat().st_size > 1000


def test_teacher_documents_come_from_the_cache(beir, tmp_path):
    """Evaluating a second student against the same teacher does not run the teacher again."""
    cache = str(tmp_path / "shared-cache")
    first = teacher()
    _eval(beir, tmp_path, teacher=first, modes="asym", cache_dir=cache)
    assert sum(n for _, n in first.calls) == 6  # 4 documents + 3 queries, "a b" shared (no prompts)
    second = teacher()
    res = _eval(
        beir,
        tmp_path,
        model=BagOfWords("other", weights={"a": 2.0}),
        teacher=second,
        modes="asym",
        cache_dir=cache,
    )
    assert second.calls == []
    assert res.score("tiny-beir", "asym") == pytest.approx(TEACHER_NDCG, abs=1e-5)


def test_undistilled_student_scores_low_in_asym(beir, tmp_path):
    res = _eval(beir, tmp_path, model=BagOfWords("rolled", shift=3), teacher=teacher(), modes="asym,student")
    assert res.score("tiny-beir", "student") == pytest.approx(TEACHER_NDCG, abs=1e-5)  # same geometry
    assert res.score("tiny-beir", "asym") < 0.6


def test_asym_dim_mismatch_is_an_error(beir, tmp_path):
    with pytest.raises(ConfigError, match="asym mode needs the student and teacher in one space.*5-d.*6-d"):
        _eval(beir, tmp_path, model=BagOfWords("small", dim=5), teacher=teacher(), modes="asym")


def test_dims_larger_than_model_is_an_error(beir, tmp_path):
    with pytest.raises(ConfigError, match="--dims 8 is larger than the student's dimension 6"):
        _eval(beir, tmp_path, dims="8,4")


def test_student_matches_mteb_sentence_transformer_wrapper(tiny_st_factory, beir, tmp_path):
    """Our student path gives exactly the score of mteb's own SentenceTransformer wrapper."""
    import mteb
    from sentence_transformers import SentenceTransformer

    from eval.tasks import load_task

    path = tiny_st_factory(hidden=32, layers=1, seed=3)
    ours = _eval(beir, tmp_path, model=path).score("tiny-beir", "student")
    ref = mteb.evaluate(
        SentenceTransformer(path), load_task(f"beir:{beir}"), cache=None, show_progress_bar=False
    )
    assert ours == pytest.approx(ref.task_results[0].scores["test"][0]["main_score"], abs=1e-5)
