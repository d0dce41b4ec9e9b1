"""serve.fastsearch: a well-formed POST /search is answered directly; every answer equals FastAPI's own."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from serve_helpers import HashEncoder, HashTeacher, write_corpus

from serve.app import create_app
from serve.builder import build_index
from serve.fastsearch import FastSearchMiddleware
from serve.service import SearchService, ServiceOptions
from serve.settings import ServeSettings

TIMINGS = ("took_ms", "encode_ms", "search_ms")
AUTH = {"Authorization": "Bearer k"}
JSON = {"Content-Type": "application/json"}

# (body, headers): good searches of every shape, then each way a request can be refused.
REQUESTS = [
    ('{"query": "doc 3", "k": 3}', JSON),
    ('{"queries": ["doc 1", "doc 2"], "k": 2, "include_text": true}', JSON),
    ('{"query": "doc 5", "k": 4, "filter": {"group": "g1"}}', JSON),
    ('{"query": "doc 5", "k": 2}', {"Content-Type": "application/json; charset=utf-8"}),
    ('{"query": "doc 5", "k": 2}', {"Content-Type": "text/plain"}),
    ('{"query": "doc 5", "k": 0}', JSON),
    ('{"query": "doc 5", "k": 100000}', JSON),
    ('{"query": "doc 5", "queries": ["x"]}', JSON),
    ('{"query": "doc 5", "filter": {"nope": 1}}', JSON),
    ('{"query": "doc 5", "unknown": 1}', JSON),
    ('{"query": ', JSON),
    ("[]", JSON),
    ("", JSON),
]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fastsearch")
    corpus = write_corpus(root / "corpus.jsonl", 12)
    build_index(corpus, HashTeacher(), root / "idx", cache_dir=root / "cache", show_progress=False)
    return root / "idx"


def _client(index_dir, **settings) -> TestClient:
    cfg = ServeSettings(index_dir=index_dir, student="hash", max_k=50, **settings)
    opts = ServiceOptions(cache_dir=str(index_dir.parent / "cache"), read_only=True)
    return TestClient(create_app(cfg, SearchService.open(index_dir, HashEncoder(), None, opts)))


def _answer(client: TestClient, body: str, headers: dict) -> tuple[int, object]:
    resp = client.post("/search", content=body.encode(), headers=headers)
    data = resp.json()
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in TIMINGS}
    return resp.status_code, data


@pytest.fixture
def answered(monkeypatch) -> list[bool]:
    """Whether each request was answered by the direct path (True) or went on to FastAPI (False)."""
    seen: list[bool] = []
    original = FastSearchMiddleware._answer

    async def spy(self, *args):
        seen.append(await original(self, *args))
        return seen[-1]

    monkeypatch.setattr(FastSearchMiddleware, "_answer", spy)
    return seen


@pytest.mark.parametrize("protect", [False, True])
def test_every_answer_equals_fastapis_own(index_dir, answered, protect):
    keys = {"api_key": "k", "protect_reads": True} if protect else {}
    headers_sets = (
        [{}, AUTH, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic k"}] if protect else [{}]
    )
    with _client(index_dir, fast_search=False, **keys) as plain, _client(index_dir, **keys) as fast:
        for body, headers in REQUESTS:
            for extra in headers_sets:
                both = {**headers, **extra}
                assert _answer(fast, body, both) == _answer(plain, body, both), (body, both)
    # The first four are well-formed searches (the fifth is not JSON by its type); protected, only the
    # right key is answered directly.
    assert sum(answered) == 4


def test_a_good_search_is_answered_directly_and_timed_as_the_route(index_dir, answered):
    with _client(index_dir) as client:
        resp = client.post("/search", json={"query": "doc 1", "k": 2})
        assert resp.status_code == 200 and len(resp.json()["results"]) == 2
        assert answered == [True]
        metrics = client.get("/metrics").text
    line = next(
        x
        for x in metrics.splitlines()
        if "embedkd_http_request_duration_seconds_count" in x and 'route="/search"' in x
    )
    assert line.endswith(" 1.0") and 'status="200"' in line


def test_fast_search_off_leaves_every_search_to_fastapi(index_dir, answered):
    with _client(index_dir, fast_search=False) as client:
        assert client.post("/search", json={"query": "doc 1", "k": 2}).status_code == 200
    assert answered == []


def test_an_oversized_body_is_refused_before_the_search(index_dir, answered):
    with _client(index_dir, max_body_bytes=1024) as client:
        resp = client.post("/search", json={"query": "x" * 2000, "k": 2})
        assert resp.status_code == 413 and resp.json()["error"] == "body_too_large"
    assert answered == []


def test_asgi_overhead_bench_times_both_paths_through_the_whole_stack(index_dir):
    import importlib.util
    import json
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.append(str(bench))  # the script imports its sibling modules by name
    spec = importlib.util.spec_from_file_location("bench_asgi_overhead", bench / "asgi_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    body = json.dumps({"query": "doc 1", "k": 2}).encode()
    for fast in (True, False):
        with _client(index_dir, fast_search=fast) as client:  # lifespan on: batcher started
            total, took = client.portal.call(module.call, client.app, body)
            assert total > took > 0
            with pytest.raises(RuntimeError, match="answered 422"):
                client.portal.call(module.call, client.app, b'{"query": ')
