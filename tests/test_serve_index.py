"""serve.index, serve.snapshot and serve.store: FAISS index types, snapshots, the document store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedkd.errors import ConfigError, EmbedkdError
from serve.builder import read_corpus
from serve.index import IndexMeta, IndexSpec, VectorIndex, hnsw_params, ivfpq_params
from serve.snapshot import read_snapshot, write_meta, write_snapshot
from serve.store import DocStore, Document, matches


def _meta(kind: str = "flat", shards: int = 1, dim: int = 8, params: dict | None = None) -> IndexMeta:
    return IndexMeta(
        teacher_id="t", teacher_name="t", dim=dim, index_type=kind, shards=shards, params=params or {}
    )


def _unit_vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind,shards", [("flat", 1), ("flat", 3), ("hnsw", 1), ("hnsw", 2)])
def test_exact_self_match_and_stable_ids(kind, shards):
    x = _unit_vectors(200)
    params = hnsw_params(200) if kind == "hnsw" else {}
    index = VectorIndex.create(_meta(kind, shards, params=params))
    ids = np.arange(1000, 1200)
    index.add(ids, x)
    assert index.ntotal == 200
    hits = index.search(x[[5, 77]], 3)
    assert [h[0][0] for h in hits] == [1005, 1077]
    assert hits[0][0][1] == pytest.approx(1.0, abs=1e-5)
    assert hits[0][0][1] >= hits[0][1][1] >= hits[0][2][1]


def test_flat_scores_are_cosine_and_remove_by_id():
    index = VectorIndex.create(_meta())
    x = np.eye(8, dtype=np.float32) * 3.0  # normalised on the way in
    index.add([10, 11, 12], x[:3])
    q = np.array([[1.0, 0.5, 0, 0, 0, 0, 0, 0]], np.float32)  # cosine 2/sqrt(5), 1/sqrt(5), 0
    hits = index.search(q, 3)[0]
    assert [i for i, _ in hits] == [10, 11, 12]
    assert [s for _, s in hits] == pytest.approx([2 / 5**0.5, 1 / 5**0.5, 0.0], abs=1e-6)
    assert index.remove([11, 999]) == 1
    assert [i for i, _ in index.search(q, 3)[0]] == [10, 12]


def test_overfetch_finds_filtered_hits_beyond_k():
    x = _unit_vectors(300)
    index = VectorIndex.create(_meta())
    index.add(np.arange(300), x)
    wanted = set(range(0, 300, 50))  # 6 ids: far fewer than k * overfetch near any query
    hits = index.search(x[:1], 5, accept=lambda _row, ids: np.isin(ids, list(wanted)), overfetch=2)[0]
    assert len(hits) == 5 and {i for i, _ in hits} <= wanted
    assert hits[0][0] == 0
    exhaustive = index.search(x[:1], 10, accept=lambda _row, ids: np.isin(ids, list(wanted)))[0]
    assert {i for i, _ in exhaustive} == wanted  # fewer than k exist: all of them, no error


def test_ivfpq_params_from_corpus_size():
    small = ivfpq_params(300, 32)
    assert small == {"nlist": 7, "pq_m": 8, "pq_nbits": 2, "train_size": 300, "nprobe": 7}
    big = ivfpq_params(1_000_000, 768)
    assert big["nlist"] == 4000 and big["pq_m"] == 64 and big["pq_nbits"] == 8
    assert big["train_size"] == 256_000 and big["nprobe"] == 250
    assert ivfpq_params(5183, 768, IndexSpec("ivfpq", nlist=16, pq_m=96))["pq_m"] == 96
    with pytest.raises(ConfigError, match="pq_m=7 must divide"):
        ivfpq_params(5000, 768, IndexSpec("ivfpq", pq_m=7))
    with pytest.raises(ConfigError, match="unknown index type 'annoy'"):
        IndexSpec("annoy")


def test_ivfpq_trained_on_sample_searches_and_removes():
    x = _unit_vectors(2000, dim=16, seed=1)
    params = ivfpq_params(2000, 16, IndexSpec("ivfpq", pq_nbits=8, nprobe=51))
    index = VectorIndex.create(_meta("ivfpq", dim=16, params=params))
    assert not index.is_trained
    index.train(x[: params["train_size"]])
    index.add(np.arange(2000), x)
    top1 = [h[0][0] for h in index.search(x[:50], 1)]
    assert np.mean(np.array(top1) == np.arange(50)) >= 0.9  # PQ is lossy, nearly always right
    assert index.remove([0, 1]) == 2 and index.ntotal == 1998


def test_snapshot_roundtrip_atomic_and_corruption_detected(tmp_path):
    meta = _meta(shards=2)
    index = VectorIndex.create(meta)
    x = _unit_vectors(50)
    index.add(np.arange(50), x)
    write_meta(tmp_path, meta)
    write_snapshot(tmp_path, index, applied_seq=7)
    (tmp_path / "snapshots" / ".tmp-snap-000000000099-1").mkdir()  # debris of a crashed snapshot
    snap = read_snapshot(tmp_path, meta)
    assert snap.applied_seq == 7 and snap.index.ntotal == 50
    assert snap.index.search(x[3:4], 1)[0][0][0] == 3
    mapped = read_snapshot(tmp_path, meta, mmap=True)
    assert mapped.index.search(x[9:10], 1)[0][0][0] == 9
    index.add([50], x[:1])
    write_snapshot(tmp_path, index, applied_seq=8)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["CURRENT", "snap-000000000008"]
    shard = tmp_path / "snapshots" / "snap-000000000008" / "shard-001.faiss"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(EmbedkdError, match="does not match its checksum"):
        read_snapshot(tmp_path, meta)


def test_store_upsert_delete_and_write_ahead_log(tmp_path):
    store = DocStore(tmp_path / "docs.sqlite")
    vecs = np.arange(6, dtype=np.float32).reshape(2, 3)
    recs = store.upsert([Document("a", "alpha", "A", {"lang": "en"}), Document("b", "beta")], vecs)
    assert [(r.seq, r.op, r.vid, r.old_vid) for r in recs] == [(1, "upsert", 1, None), (2, "upsert", 2, None)]
    again = store.upsert([Document("a", "alpha 2")], vecs[:1])[0]
    assert (again.vid, again.old_vid) == (3, 1)  # a new version is a new vector id
    deleted = store.delete("b")
    assert (deleted.seq, deleted.op, deleted.old_vid) == (4, "delete", 2)
    assert store.delete("b") is None
    assert store.lookup([1, 2, 3]).keys() == {3}
    assert store.get("a").text == "alpha 2" and store.count() == 1
    replay = list(store.records_after(1))
    assert [r.seq for r in replay] == [2, 3, 4]
    np.testing.assert_array_equal(replay[0].vector, vecs[1])
    store.truncate_wal(3)
    assert [r.seq for r in store.records_after(0)] == [4] and store.last_seq() == 4
    assert store.fields == {"lang"}
    reader = DocStore(tmp_path / "docs.sqlite", read_only=True)
    assert reader.count() == 1
    with pytest.raises(EmbedkdError, match="read-only"):
        reader.delete("a")
    assert store.integrity_check() == "ok"


def test_metadata_filter_semantics():
    assert matches({"lang": "en", "year": 2020}, {"lang": "en"})
    assert matches({"year": 2020}, {"year": [2019, 2020]})
    assert not matches({"lang": "de"}, {"lang": "en"})
    assert not matches({}, {"lang": "en"})


def test_read_corpus_formats_and_errors(tmp_path, shared_data):
    scifact = read_corpus(shared_data / "beir-scifact", max_docs=3)
    assert [d.id for d in scifact] == ["4983", "5836", "7912"]
    assert scifact[0].embed_text == f"{scifact[0].title} {scifact[0].text}"
    txt = tmp_path / "c.txt"
    txt.write_text("first doc\n\nthird doc\n")
    assert [(d.id, d.text) for d in read_corpus(txt)] == [("1", "first doc"), ("3", "third doc")]
    dup = tmp_path / "dup.jsonl"
    dup.write_text(
        json.dumps({"_id": "x", "text": "a"}) + "\n" + json.dumps({"_id": "x", "text": "b"}) + "\n"
    )
    with pytest.raises(EmbedkdError, match="document id 'x' twice"):
        read_corpus(dup)
    with pytest.raises(EmbedkdError, match="does not exist"):
        read_corpus(tmp_path / "missing")
    with pytest.raises(EmbedkdError, match="no corpus.jsonl"):
        read_corpus(tmp_path)


def test_store_live_is_lookups_keys_without_reading_rows(tmp_path, monkeypatch):
    import serve.store

    store = DocStore(tmp_path / "docs.sqlite")
    docs = [Document(f"d{i}", f"text {i}", metadata={"n": i} if i % 2 else {}) for i in range(7)]
    store.upsert(docs, np.ones((7, 3), dtype=np.float32))  # vids 1..7
    store.delete("d2")  # vid 3
    store.upsert([Document("d4", "text 4 again")], np.ones((1, 3), dtype=np.float32))  # vid 5 -> 8
    monkeypatch.setattr(serve.store, "LOOKUP_CHUNK", 3)  # several IN (...) statements
    asked = [8, 1, 3, 5, 99, 2, 7, 1]
    assert store.live(asked) == set(store.lookup(asked)) == {1, 2, 7, 8}
    assert store.live([]) == set()
    found = store.lookup([1, 2])  # metadata "{}" skips the JSON decoder, the rest is parsed
    assert found[1].metadata == {} and found[2].metadata == {"n": 1}


def test_threads_setting_reaches_faiss_in_every_thread_that_searches(monkeypatch):
    """FAISS's OpenMP count is per thread: a worker thread that never set it must still search with
    ``--threads`` (the micro-batcher's encoding thread, the request thread pool, the monitor)."""
    import threading

    import faiss
    import torch

    from serve import threads

    saved = (torch.get_num_threads(), faiss.omp_get_max_threads())
    default = _in_new_thread(faiss.omp_get_max_threads)
    wanted = default + 1  # distinguishable from the default on any machine
    monkeypatch.setattr(threads, "_wanted", None)
    try:
        threads.set_threads(wanted)
        assert _in_new_thread(faiss.omp_get_max_threads) == default  # not inherited: why apply() exists
        index = VectorIndex.create(_meta())
        index.add(np.arange(20), _unit_vectors(20))

        def search_then_count() -> int:
            index.search(_unit_vectors(2, seed=1), 3)
            return faiss.omp_get_max_threads()

        assert _in_new_thread(search_then_count) == wanted
        assert threading.current_thread() is threading.main_thread()
    finally:
        torch.set_num_threads(saved[0])
        faiss.omp_set_num_threads(saved[1])
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        threads.set_threads(0)


def _in_new_thread(fn):
    import threading

    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(30)
    return out[0]
