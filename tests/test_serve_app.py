"""serve.app in-process (TestClient): key settings, read-only mode, settings from the environment."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from serve_helpers import HashEncoder, HashTeacher, write_corpus

from serve.app import create_app
from serve.builder import build_index
from serve.service import SearchService, ServiceOptions
from serve.settings import ServeSettings


@pytest.fixture
def index_dir(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 12)
    build_index(corpus, HashTeacher(), tmp_path / "idx", cache_dir=tmp_path / "cache", show_progress=False)
    return tmp_path / "idx"


def _client(index_dir, teacher=True, **settings) -> TestClient:
    cfg = ServeSettings(index_dir=index_dir, student="hash", **settings)
    opts = ServiceOptions(cache_dir=str(index_dir.parent / "cache"))
    svc = SearchService.open(index_dir, HashEncoder(), HashTeacher() if teacher else None, opts)
    return TestClient(create_app(cfg, svc))


def test_protected_reads_need_the_key(index_dir):
    with _client(index_dir, api_key="k", protect_reads=True) as client:
        assert client.post("/search", json={"query": "x"}).status_code == 401
        assert client.get("/stats").status_code == 401
        ok = client.post("/search", json={"query": "x", "k": 2}, headers={"Authorization": "Bearer k"})
        assert ok.status_code == 200 and len(ok.json()["results"]) == 2
        assert client.get("/healthz").status_code == 200  # liveness stays open for load balancers


def test_writes_are_refused_without_a_configured_key(index_dir):
    with _client(index_dir) as client:
        resp = client.post("/documents", json={"documents": [{"id": "a", "text": "b"}]})
        assert resp.status_code == 403 and "no API key is configured" in resp.json()["detail"]


def test_read_only_mode_without_teacher(index_dir):
    with _client(index_dir, teacher=False, api_key="k") as client:
        auth = {"Authorization": "Bearer k"}
        resp = client.post("/documents", json={"documents": [{"id": "a", "text": "b"}]}, headers=auth)
        assert resp.status_code == 403 and resp.json()["error"] == "read_only"
        embed = client.post("/embed", json={"texts": ["x"], "role": "document"}, headers=auth)
        assert embed.status_code == 409
        assert client.get("/stats").json()["read_only"] is True
        assert client.post("/search", json={"query": "x"}).status_code == 200


def test_settings_come_from_embedkd_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDKD_INDEX_DIR", str(tmp_path))
    monkeypatch.setenv("EMBEDKD_STUDENT", "some/student")
    monkeypatch.setenv("EMBEDKD_API_KEY", "from-env")
    monkeypatch.setenv("EMBEDKD_BATCH_MAX_WAIT_MS", "4.5")
    s = ServeSettings()
    assert s.api_key.get_secret_value() == "from-env" and s.batch_max_wait_ms == 4.5
    assert "from-env" not in repr(s)  # the key never shows in logs
    monkeypatch.setenv("EMBEDKD_BATCH_MAX_WAIT_MS", "50")
    with pytest.raises(ValueError, match="less than or equal to 5"):
        ServeSettings()


def test_replica_recipe_from_environment(monkeypatch, tmp_path, tiny_st_factory):
    """What the README's N-replicas recipe runs: ``uvicorn --factory serve.app:create_app_from_env``."""
    from embedkd.teachers import SentenceTransformerTeacher
    from serve.app import create_app_from_env

    teacher = tiny_st_factory(hidden=32, seed=0)
    corpus = write_corpus(tmp_path / "corpus.jsonl", 10)
    build_index(
        corpus,
        SentenceTransformerTeacher(teacher),
        tmp_path / "idx",
        cache_dir=tmp_path / "c",
        show_progress=False,
    )
    for name, value in {
        "INDEX_DIR": tmp_path / "idx",
        "STUDENT": tiny_st_factory(hidden=32, seed=1),
        "READ_ONLY": "1",
        "MMAP": "true",
        "REFRESH_SECONDS": "0.2",
    }.items():
        monkeypatch.setenv(f"EMBEDKD_{name}", str(value))
    with TestClient(create_app_from_env()) as client:
        stats = client.get("/stats").json()
        assert stats["read_only"] and stats["mmap"] and stats["documents"] == 10
        hits = client.post("/search", json={"query": "heart disease", "k": 3}).json()["results"]
        assert len(hits) == 3
