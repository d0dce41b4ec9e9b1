"""serve.service: writes, replay after a crash, replicas, model checks (in-process, fake encoders)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from serve_helpers import HashEncoder, HashTeacher, write_corpus

from embedkd.errors import ConfigError, EmbedkdError
from serve.builder import build_index
from serve.encoders import load_query_encoder
from serve.index import IndexSpec
from serve.service import ReadOnlyError, SearchService, ServiceOptions, UnknownFieldError
from serve.store import Document


@pytest.fixture
def index_dir(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 30)
    build_index(corpus, HashTeacher(), tmp_path / "idx", cache_dir=tmp_path / "cache", show_progress=False)
    return tmp_path / "idx"


def _open(index_dir, teacher=True, **options) -> SearchService:
    opts = ServiceOptions(cache_dir=str(index_dir.parent / "cache"), **options)
    return SearchService.open(index_dir, HashEncoder(), HashTeacher() if teacher else None, opts)


def _top(svc: SearchService, text: str, k: int = 1, filters=None) -> list[str]:
    vecs, _ = svc.encode_queries([text])
    return [h.id for h in svc.search(vecs, k, filters)[0]]


def test_search_finds_exact_document_and_filters(index_dir):
    svc = _open(index_dir)
    doc = json.loads((index_dir.parent / "corpus.jsonl").read_text().splitlines()[4])
    assert _top(svc, f"{doc['title']} {doc['text']}") == ["d4"]
    hits = svc.search(svc.encode_queries(["anything"])[0], 30, {"group": "g1"})[0]
    assert sorted(h.id for h in hits) == sorted(f"d{i}" for i in range(1, 30, 3))
    ranked = _top(svc, "anything", 40)  # the filter keeps the unfiltered ranking of what it lets through
    assert _top(svc, "anything", 5, {"n": [3, 7]}) == [d for d in ranked if d in ("d3", "d7")]
    with pytest.raises(UnknownFieldError, match="unknown filter field.*colour.*known fields: group, n"):
        svc.search(svc.encode_queries(["x"])[0], 3, {"colour": "red"})
    svc.close()


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_acknowledged_writes_survive_a_crash_via_replay(tmp_path, index_type):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 20)
    idx = tmp_path / "idx"
    build_index(
        corpus, HashTeacher(), idx, IndexSpec(index_type), cache_dir=tmp_path / "cache", show_progress=False
    )
    svc = _open(idx, snapshot_every=0)
    svc.upsert([Document("new", "a brand new document"), Document("d3", "d3 rewritten")])
    assert svc.delete("d5") and not svc.delete("nope")
    # no close(): the process "dies" with everything after the build only in the write-ahead log
    svc._writer_lock.close()  # (a dead process's lock is released by the OS)
    again = _open(idx)
    assert again.applied_seq == 3 and again.snapshot_name == "snap-000000000003"  # replayed, then snapshotted
    assert _top(again, "a brand new document") == ["new"]
    assert _top(again, "d3 rewritten") == ["d3"]
    assert "d5" not in _top(again, "anything", 25)
    assert again.store.get("d3").text == "d3 rewritten" and again.store.count() == 20
    assert list(again.store.records_after(0)) == []  # the snapshot holds them all; the log was truncated
    again.close()


def test_teacher_embeds_each_text_once_through_the_cache(index_dir):
    svc = _open(index_dir)
    svc.upsert([Document("x", "same text")])
    svc.upsert([Document("y", "same text")])
    svc.embed_documents(["same text"])
    assert svc.teacher.calls == 1


def test_read_only_without_teacher_and_mmap_replica_follows_writer(index_dir):
    reader = _open(index_dir, teacher=False)
    with pytest.raises(ReadOnlyError, match="no teacher"):
        reader.upsert([Document("z", "zzz")])
    writer = _open(index_dir, snapshot_every=2)
    with pytest.raises(EmbedkdError, match="already open for writing by another process"):
        _open(index_dir)
    writer.upsert([Document("w1", "first write")])
    replica = _open(index_dir, teacher=False, mmap=True)
    assert replica.read_only and _top(replica, "first write") == ["w1"]  # from the log, in its delta
    writer.upsert([Document("w2", "second write")])  # triggers a snapshot + log truncation
    writer.upsert([Document("w3", "third write")])
    writer.delete("w1")
    replica.sync()
    assert _top(replica, "third write") == ["w3"] and _top(replica, "second write") == ["w2"]
    assert "w1" not in _top(replica, "first write", 40)
    assert replica.stats()["documents"] == 32


def test_student_with_wrong_dimension_is_refused(index_dir, tiny_st_factory):
    from serve.snapshot import read_meta

    with pytest.raises(ConfigError, match=r"outputs 48-d vectors but the index .* 16-d"):
        load_query_encoder(tiny_st_factory(hidden=48), read_meta(index_dir))


def test_query_encoder_embeds_queries_in_one_pass_and_flags_truncation(tiny_st_factory):
    from sentence_transformers import SentenceTransformer

    from serve.encoders import QueryEncoder

    model = SentenceTransformer(tiny_st_factory(), device="cpu", prompts={"query": "query: "})
    model.max_seq_length = 8
    encoder = QueryEncoder(model, "tiny")
    texts = ["short", "a query that is much longer than eight tokens once tokenized"]
    vecs = encoder.encode(texts)
    np.testing.assert_allclose(vecs, model.encode(["query: " + t for t in texts], prompt=""), atol=1e-5)
    assert (encoder.id, encoder.name, vecs.shape) == ("tiny", "tiny", (2, 32))
    assert encoder.truncated(texts) == [False, True]


def test_wrong_teacher_and_missing_index_are_refused(index_dir, tmp_path):
    class Other(HashTeacher):
        id = "other-teacher"

    with pytest.raises(EmbedkdError, match="not the index's teacher"):
        SearchService.open(index_dir, HashEncoder(), Other())
    with pytest.raises(EmbedkdError, match="does not exist"):
        SearchService.open(tmp_path / "nowhere", HashEncoder())
