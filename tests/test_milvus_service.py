"""serve.milvus_service and serve.milvus_build in-process: a Milvus Lite file in tmp_path, fake models."""

from __future__ import annotations

import json

import pytest
from conftest import IN_CI
from serve_helpers import HashEncoder, HashTeacher, write_corpus

try:
    import milvus_lite  # noqa: F401
    import pymilvus  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    _reason = f"{exc.name} is not installed (pip install pymilvus milvus-lite)"
    if IN_CI:
        pytest.fail(f"{_reason}; CI=true requires the Milvus service tests", pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

from embedkd.errors import ConfigError, EmbedkdError
from serve.builder import build_index, index_from_vectors, read_corpus, teacher_meta
from serve.errors import ServiceStateError
from serve.milvus_build import BUILD_SUFFIX, MilvusSpec, collection_exists, milvus_client
from serve.milvus_service import MilvusSearchService
from serve.service import SearchService, ServiceOptions, UnknownFieldError, open_search_service
from serve.store import Document
from serve.store_config import StoreKind, read_store_config


@pytest.fixture
def built(tmp_path):
    """20 documents by the hash teacher in collection ``docs`` of ``tmp_path/m.db``."""
    corpus = write_corpus(tmp_path / "corpus.jsonl", 20)
    spec = MilvusSpec(str(tmp_path / "m.db"), collection="docs", index_type="hnsw", search_params={"ef": 80})
    build_index(
        corpus, HashTeacher(), tmp_path / "idx", spec, cache_dir=tmp_path / "cache", show_progress=False
    )
    return tmp_path


def open_service(root, **options) -> MilvusSearchService:
    opts = ServiceOptions(cache_dir=str(root / "cache"), **options)
    return open_search_service(root / "idx", HashEncoder(), HashTeacher(), opts)


def test_meta_json_records_the_teacher_and_the_collection(built):
    meta = json.loads((built / "idx" / "meta.json").read_text())
    assert meta["teacher_id"] == "hash-teacher" and meta["index_type"] == "hnsw"
    assert meta["params"] == {"M": 16, "efConstruction": 200}
    assert meta["store"] == {
        "kind": "milvus",
        "uri": str(built / "m.db"),
        "collection": "docs",
        "metric": "IP",
        "search_params": {"ef": 80},
    }
    assert sorted(p.name for p in (built / "idx").iterdir()) == ["meta.json"]  # no FAISS files
    assert read_store_config(built / "idx").kind is StoreKind.MILVUS


def test_service_searches_writes_and_checks_filters(built):
    svc = open_service(built)
    try:
        assert isinstance(svc, MilvusSearchService) and svc.store.count() == 20
        doc = read_corpus(built / "corpus.jsonl")[4]
        hits = svc.search(HashEncoder().encode([doc.embed_text]), 3, {"group": "g1"}, include_text=True)
        assert hits[0][0].id == "d4" and hits[0][0].score == pytest.approx(1.0, abs=1e-5)
        assert hits[0][0].text == doc.text and all(h.metadata["group"] == "g1" for h in hits[0])
        assert svc.search_detailed(HashEncoder().encode(["x"]), 2).partial == [False]
        with pytest.raises(UnknownFieldError, match="colour: no stored document has them"):
            svc.check_filter({"colour": "red"})
        assert svc.upsert([Document("new", "fresh text", None, {"colour": "red"})]) == 1
        svc.check_filter({"colour": "red"})  # known once a document has it
        found = svc.search(HashEncoder().encode(["fresh text"]), 5, {"colour": ["red", "blue"]})
        assert [h.id for h in found[0]] == ["new"]
        assert svc.delete("new") and not svc.delete("new") and svc.store.get("new") is None
        with pytest.raises(EmbedkdError, match="duplicate"):
            svc.upsert([Document("a", "1"), Document("a", "2")])
        stats = svc.stats()
        assert (stats["store"], stats["milvus"], stats["documents"], stats["vectors"]) == (
            "milvus",
            "lite",
            20,
            20,
        )
        assert stats["index_type"] == "hnsw" and stats["metadata_fields"] == ["colour", "group", "n"]
    finally:
        svc.close()
    with pytest.raises(ConfigError, match="is a milvus index, not faiss"):
        SearchService.open(built / "idx", HashEncoder())


def test_writes_survive_a_reopen_and_a_teacherless_service_is_read_only(built):
    svc = open_service(built)
    svc.upsert([Document("kept", "kept text", "T", {"group": "g9"})])
    svc.close()
    reader = open_search_service(built / "idx", HashEncoder(), None, ServiceOptions())
    try:
        assert reader.read_only and reader.store.get("kept").title == "T"
        with pytest.raises(EmbedkdError, match="read-only"):
            reader.delete("kept")
    finally:
        reader.close()


def test_a_lost_collection_or_file_is_refused_never_recreated(built):
    with milvus_client(
        str(built / "m.db"), MilvusSpec(str(built / "m.db"), collection="docs").options()
    ) as c:
        c.drop_collection("docs")
    with pytest.raises(ServiceStateError, match="collection .docs. that .* records does not exist"):
        open_service(built)
    assert not collection_exists(
        str(built / "m.db"), MilvusSpec(str(built / "m.db"), collection="docs").options()
    )
    with pytest.raises(ServiceStateError, match="Milvus Lite file .*gone.db .* does not exist"):
        open_service(built, uri=str(built / "gone.db"))
    assert not (built / "gone.db").exists()
    with pytest.raises(ConfigError, match="--mmap"):
        open_service(built, mmap=True)


def test_overwrite_replaces_the_collection_and_clears_an_interrupted_build(tmp_path):
    docs = [Document(f"p{i}", f"precomputed {i}", None, {"i": i}) for i in range(12)]
    vectors = HashTeacher().encode([d.embed_text for d in docs])
    meta = teacher_meta(HashTeacher())
    spec = MilvusSpec(str(tmp_path / "m.db"), collection="docs")
    index_from_vectors(docs[:5], vectors[:5], meta, tmp_path / "idx", spec, show_progress=False)
    with pytest.raises(EmbedkdError, match="already holds 5 documents; pass --overwrite"):
        index_from_vectors(docs, vectors, meta, tmp_path / "idx2", spec, show_progress=False)
    leftover = spec.options(collection="docs" + BUILD_SUFFIX)
    with milvus_client(spec.uri, leftover) as c:  # what a killed build leaves behind
        c.create_collection(leftover.collection, dimension=16)
    index_from_vectors(docs, vectors, meta, tmp_path / "idx", spec, overwrite=True, show_progress=False)
    assert not collection_exists(spec.uri, leftover)
    svc = open_search_service(tmp_path / "idx", HashEncoder())
    try:
        assert svc.store.count() == 12
        assert svc.search(vectors[7:8], 1)[0][0].id == "p7"
    finally:
        svc.close()
    with pytest.raises(EmbedkdError, match=r"need vectors of that shape, got \(11, 16\)"):
        index_from_vectors(docs, vectors[:11], meta, tmp_path / "idx3", spec, show_progress=False)


def test_spec_checks_before_anything_is_created(tmp_path):
    with pytest.raises(ConfigError, match="'ivf_pq' is not offered by Milvus Lite"):
        MilvusSpec(str(tmp_path / "m.db"), index_type="ivfpq")
    with pytest.raises(ConfigError, match="collection name"):
        MilvusSpec(str(tmp_path / "m.db"), collection="bad-name")
    with pytest.raises(ConfigError, match="neither a Milvus Lite file"):
        MilvusSpec(str(tmp_path / "m.sqlite"))
    assert MilvusSpec("http://host:19530", index_type="ivf_pq").index_type.value == "ivf_pq"
    assert not (tmp_path / "m.db").exists()


def test_faiss_index_directories_read_as_faiss(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 6)
    build_index(corpus, HashTeacher(), tmp_path / "idx", cache_dir=tmp_path / "cache", show_progress=False)
    assert "store" not in json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert read_store_config(tmp_path / "idx").kind is StoreKind.FAISS
    with pytest.raises(ConfigError, match="--uri .* names a Milvus store"):
        open_search_service(
            tmp_path / "idx", HashEncoder(), options=ServiceOptions(uri=str(tmp_path / "m.db"))
        )
    with pytest.raises(ConfigError, match="--store milvus: .* is a faiss index"):
        open_search_service(tmp_path / "idx", HashEncoder(), options=ServiceOptions(store="milvus"))
    svc = open_search_service(tmp_path / "idx", HashEncoder())
    try:
        assert isinstance(svc, SearchService) and svc.stats()["store"] == "faiss"
    finally:
        svc.close()
