"""``embedkd adapt``: a query student continues LEAF training on an index's own corpus, kept only if it wins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import embedkd
from embedkd.errors import ConfigError, EmbedkdError
from serve.adapt import AdaptConfig, adapt, pseudo_queries

TOPICS = ["kidney stones", "solar panels", "river floods", "vaccine trials", "bee colonies", "steel alloys"]


def _corpus(path: Path) -> Path:
    rows = []
    for i in range(60):
        topic = TOPICS[i % len(TOPICS)]
        text = (f"Study {i} of {topic} measured effect {i % 7}. The {topic} results varied by site {i % 5}. "
                f"Further work on {topic} is planned for year {2000 + i}.")  # fmt: skip
        rows.append({"_id": f"d{i}", "title": f"{topic} report {i}", "text": text})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def index_and_students(tiny_st_factory, tmp_path_factory):
    from embedkd.teachers import load_teacher
    from serve.builder import build_index

    root = tmp_path_factory.mktemp("adapt")
    teacher = tiny_st_factory(hidden=48, layers=2, seed=11)
    cache = root / "cache"
    build_index(_corpus(root / "corpus.jsonl"), load_teacher(teacher), root / "idx", teacher_name=teacher,
                cache_dir=cache, show_progress=False)  # fmt: skip
    # A student barely trained on unrelated text: far from the teacher on this corpus.
    texts = root / "general.txt"
    texts.write_text("\n".join(f"general sentence {i} about item {i % 13}" for i in range(120)) + "\n")
    student = embedkd.distill(teacher=teacher, student=tiny_st_factory(hidden=32, layers=1, seed=3), data=texts,
                              output=root / "general", max_steps=2, heldout=10, batch_size=16, cache_dir=cache)  # fmt: skip
    return root, str(student), cache


def test_pseudo_queries_are_titles_sentences_and_spans():
    docs = [("Kidney stones", "Stones form in kidneys over years. They hurt a lot when they move. Ok.")]
    out = pseudo_queries(docs, 100, seed=0)
    assert "Kidney stones" in out and "Stones form in kidneys over years." in out
    assert "Ok." not in out  # too short to be a query
    assert len(out) == len(set(out)) and any(len(t.split()) <= 8 and t not in docs[0] for t in out)


def test_adapt_writes_a_student_that_agrees_more_with_the_teacher(index_and_students, tmp_path):
    root, student, cache = index_and_students
    config = AdaptConfig(index_dir=str(root / "idx"), student=student, output=str(tmp_path / "adapted"),
                         pseudo_queries=400, heldout=60, epochs=3, lr=1e-3, batch_size=16, cache_dir=str(cache))  # fmt: skip
    report = adapt(config)
    assert report["after"]["top10_overlap"] > report["before"]["top10_overlap"]
    saved = json.loads((tmp_path / "adapted" / "embedkd_adapt.json").read_text())
    assert saved["documents"] == 60 and saved["logged_queries"] == 0
    assert "Adapted to an index" in (tmp_path / "adapted" / "README.md").read_text()
    assert not (tmp_path / "adapted.work").exists()


def test_adapt_ranking_term_scores_against_the_index_documents(index_and_students, tmp_path, monkeypatch):
    import embedkd.methods.leaf.loss as loss_module

    seen = []
    original = loss_module.RankDistillLoss.__init__

    def spy(self, model, bank, **kwargs):
        seen.append((np.asarray(bank).shape, kwargs))
        original(self, model, bank, **kwargs)

    monkeypatch.setattr(loss_module.RankDistillLoss, "__init__", spy)
    root, student, cache = index_and_students
    config = AdaptConfig(index_dir=str(root / "idx"), student=student, output=str(tmp_path / "adapted"),
                         pseudo_queries=200, heldout=40, epochs=1, lr=1e-3, batch_size=16, kl_weight=1.0,
                         cosine_weight=0.5, cache_dir=str(cache))  # fmt: skip
    try:
        adapt(config)
    except EmbedkdError as exc:  # one epoch may not win; the bank is what this test checks
        assert "did not beat" in str(exc)
    (rows, _dim), kwargs = seen[0]
    assert rows == 60 and kwargs == {"kl_weight": 1.0, "cosine_weight": 0.5}


def test_adapt_trains_on_logged_queries_too(index_and_students, tmp_path, monkeypatch):
    import shutil

    import serve.adapt as module
    from embedkd.teachers import load_teacher
    from serve.querylog import QueryLog
    from serve.snapshot import read_meta

    root, student, cache = index_and_students
    idx = tmp_path / "idx"
    shutil.copytree(root / "idx", idx)
    meta = read_meta(idx)
    teacher = load_teacher(meta.teacher_name, max_seq_length=meta.teacher_max_seq_length)
    log = QueryLog.in_index(idx, teacher.id, teacher.dim)
    logged = ["which site had kidney stones", "bee colonies in year 2004"]
    log.append(logged, teacher.encode(logged, "query"))
    log.close()
    seen = {}

    def spy(config, meta, texts, work, bank):
        seen["texts"] = texts
        raise EmbedkdError("stop after seeing the training texts")

    monkeypatch.setattr(module, "_train", spy)
    config = AdaptConfig(index_dir=str(idx), student=student, output=str(tmp_path / "out"), pseudo_queries=50,
                         heldout=10, cache_dir=str(cache))  # fmt: skip
    with pytest.raises(EmbedkdError, match="stop after"):
        adapt(config)
    texts = seen["texts"]
    assert len(texts) == 50 + len(logged) - 10  # pseudo-queries and logged queries, minus the held-out ones
    assert set(logged) & set(texts)


def test_adapt_refuses_a_student_that_does_not_win(
    index_and_students, tmp_path, monkeypatch, tiny_st_factory
):
    import serve.adapt as module

    root, student, cache = index_and_students
    worse = tiny_st_factory(hidden=48, layers=1, seed=99)  # right dimension, not in the teacher's space
    monkeypatch.setattr(module, "_train", lambda config, meta, texts, work, bank: Path(worse))
    config = AdaptConfig(index_dir=str(root / "idx"), student=student, output=str(tmp_path / "adapted"),
                         pseudo_queries=200, heldout=40, cache_dir=str(cache))  # fmt: skip
    with pytest.raises(EmbedkdError, match="did not beat"):
        adapt(config)
    assert not (tmp_path / "adapted").exists()


def test_adapt_config_errors_name_the_value(tmp_path):
    with pytest.raises(ConfigError, match="--pseudo-queries must be >= 1, got 0"):
        AdaptConfig(index_dir="i", student="s", output="o", pseudo_queries=0)
    with pytest.raises(ConfigError, match="--output must differ"):
        AdaptConfig(index_dir="i", student=str(tmp_path), output=str(tmp_path))


@pytest.mark.parametrize(
    ("asked", "native", "used"), [(True, True, True), (True, False, False), (False, True, False)]
)
def test_adapt_trains_under_bf16_only_where_asked_and_native(index_and_students, tmp_path, monkeypatch, asked, native, used):  # fmt: skip
    import embedkd.training

    class Stop(Exception):
        pass

    seen = {}

    def fake_distill(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(embedkd, "distill", fake_distill)
    monkeypatch.setattr(embedkd.training, "native_bf16", lambda: native)
    root, student, cache = index_and_students
    config = AdaptConfig(index_dir=str(root / "idx"), student=student, output=str(tmp_path / "adapted"),
                         pseudo_queries=100, heldout=20, bf16=asked, cache_dir=str(cache))  # fmt: skip
    with pytest.raises(Stop):
        adapt(config)
    assert seen["bf16"] is used


def test_adapt_cli_turns_bf16_off_with_no_bf16():
    import argparse

    from embedkd.cli.options import config_from_args
    from serve.cli_adapt import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--index-dir", "i", "--student", "s", "--output", "o"]
    assert config_from_args(AdaptConfig, parser.parse_args(base)).bf16 is True
    assert config_from_args(AdaptConfig, parser.parse_args([*base, "--no-bf16"])).bf16 is False
