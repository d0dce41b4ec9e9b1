"""The HTTP API against a real ``embedkd serve`` subprocess on 127.0.0.1 (tiny teacher and student).

Also fuzzes the API from its own OpenAPI schema with schemathesis (a bounded number of examples).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from serve_helpers import Server, write_corpus

from embedkd.teachers import SentenceTransformerTeacher
from serve.builder import build_index

pytestmark = pytest.mark.e2e  # a real server subprocess (killed with kill -9, restarted)

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


CRASH_ACKS = 25  # acknowledged writes before the kill -9


def _write_stream(
    url: str, acked: list[str], deleted: list[str], uncertain: list[str], stop: threading.Event
) -> None:
    """Upsert documents one by one (deleting every 5th acknowledged one) until the server dies.

    A delete in flight when the server dies was never acknowledged: it may or may not have been applied,
    so its document goes to ``uncertain`` (neither outcome is a durability failure).
    """
    with httpx.Client(base_url=url, timeout=30, headers=AUTH) as c:
        i = 0
        while not stop.is_set():
            doc = {
                "id": f"w{i}",
                "text": f"written document number {i} about topic {i % 7}",
                "metadata": {"w": i},
            }
            try:
                if c.post("/documents", json={"documents": [doc]}).status_code != 200:
                    return
                acked.append(doc["id"])
                if i % 5 == 4:
                    victim = acked[-3]
                    try:
                        status = c.delete(f"/documents/{victim}").status_code
                    except httpx.HTTPError:
                        uncertain.append(victim)
                        raise
                    if status != 200:
                        return
                    deleted.append(victim)
            except httpx.HTTPError:
                return  # the server was killed: what was acknowledged so far must survive
            i += 1


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, tiny_st_factory):
    """40 documents by a tiny teacher, another tiny model as student; the server is killed with
    ``kill -9`` during a stream of acknowledged writes and restarted before the API tests run."""
    root = tmp_path_factory.mktemp("serve-http")
    teacher_path, student_path = tiny_st_factory(hidden=32, seed=0), tiny_st_factory(hidden=32, seed=1)
    corpus = write_corpus(root / "corpus.jsonl", 40)
    teacher = SentenceTransformerTeacher(teacher_path)
    build_index(
        corpus,
        teacher,
        root / "idx",
        teacher_name=teacher_path,
        cache_dir=root / "cache",
        show_progress=False,
    )
    args = ["--index-dir", str(root / "idx"), "--student", student_path, "--teacher", teacher_path]
    args += ["--cache-dir", str(root / "cache"), "--max-k", "20", "--snapshot-every", "7", "--threads", "1"]
    env = {"EMBEDKD_API_KEY": KEY}
    first = Server(args, root / "server.log", env=env).wait_ready()
    acked, deleted, uncertain, stop = [], [], [], threading.Event()
    writer = threading.Thread(target=_write_stream, args=(first.url, acked, deleted, uncertain, stop))
    writer.start()
    deadline = time.monotonic() + 300
    while len(acked) < CRASH_ACKS and writer.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    first.kill9()  # mid-stream: a write is usually in flight
    writer.join(timeout=60)
    stop.set()
    assert len(acked) >= CRASH_ACKS, first.tail()
    server = Server(args, root / "server.log", env=env).wait_ready()
    client = httpx.Client(base_url=server.url, timeout=60)
    yield {
        "server": server,
        "client": client,
        "corpus": corpus,
        "teacher": teacher,
        "root": root,
        "acked": list(acked),
        "deleted": list(deleted),
        "uncertain": list(uncertain),
    }
    client.close()
    assert server.stop() in (0, -signal.SIGTERM), server.tail()  # uvicorn re-raises the signal it handled


def test_kill_9_loses_no_acknowledged_write(deployment):
    """After ``kill -9`` and a restart, every acknowledged write is there, and nothing is corrupt."""
    client, acked, deleted = deployment["client"], deployment["acked"], deployment["deleted"]
    live = [d for d in acked if d not in deleted and d not in deployment["uncertain"]]
    numbers = [int(d[1:]) for d in live]
    found = client.post("/search", json={"query": "written document", "k": 20, "filter": {"w": numbers[:20]}})
    assert {r["id"] for r in found.json()["results"]} == set(live[:20])  # searchable, through the index
    for doc_id in live:
        got = client.get(f"/documents/{doc_id}")
        assert got.status_code == 200 and got.json()["text"].startswith(
            f"written document number {doc_id[1:]} "
        )
    for doc_id in deleted:
        assert client.get(f"/documents/{doc_id}").status_code == 404
        hits = client.post("/search", json={"query": "x", "k": 5, "filter": {"w": int(doc_id[1:])}}).json()
        assert hits["results"] == []
    stats = client.get("/stats").json()
    in_flight = stats["documents"] - (40 + len(live))
    assert in_flight in (0, 1)  # at most the one write that was never acknowledged
    assert stats["vectors"] == stats["documents"]  # index and store agree: nothing half-applied
    with sqlite3.connect(deployment["root"] / "idx" / "docs.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.fixture
def client(deployment) -> httpx.Client:
    return deployment["client"]


def test_search_one_query_and_a_batch(client):
    one = client.post("/search", json={"query": "heart disease cohort", "k": 5})
    assert one.status_code == 200, one.text
    body = one.json()
    assert len(body["results"]) == 5 and body["truncated"] is False and body["k"] == 5
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)
    assert {"id", "score"} <= set(body["results"][0]) and "text" not in body["results"][0]
    many = client.post(
        "/search", json={"queries": ["heart disease cohort", "protein folding"], "k": 3}
    ).json()
    assert [len(r) for r in many["results"]] == [3, 3] and many["truncated"] == [False, False]
    batched = many["results"][0]  # batching does not change a query's answer
    assert [r["id"] for r in batched] == [r["id"] for r in body["results"][:3]]
    assert [r["score"] for r in batched] == pytest.approx(scores[:3], abs=1e-5)


def test_filter_and_include_text(client, deployment):
    rows = {
        json.loads(line)["_id"]: json.loads(line) for line in deployment["corpus"].read_text().splitlines()
    }
    body = client.post(
        "/search", json={"query": "gene expression", "k": 20, "filter": {"group": "g1"}, "include_text": True}
    ).json()
    ids = {r["id"] for r in body["results"]}
    assert ids == {f"d{i}" for i in range(1, 40, 3)}  # every g1 document (13 < k), and nothing else
    first = body["results"][0]
    assert first["text"] == rows[first["id"]]["text"] and first["title"] == rows[first["id"]]["title"]
    assert first["metadata"]["group"] == "g1"


def test_query_over_max_length_is_truncated_and_reported(client):
    body = client.post("/search", json={"query": "very long query " * 100, "k": 2}).json()
    assert body["truncated"] is True and len(body["results"]) == 2


def test_writes_need_the_api_key(client):
    doc = {"documents": [{"id": "k1", "text": "keyed"}]}
    missing = client.post("/documents", json=doc)
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert client.post("/documents", json=doc, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.delete("/documents/d1").status_code == 401
    assert client.get("/documents/d1").status_code == 200  # reads are open by default


def test_upsert_search_get_delete(client, deployment):
    doc = {
        "id": "fresh-1",
        "text": "a fresh note about zebrafish fins",
        "title": "Fins",
        "metadata": {"tag": "t1"},
    }
    resp = client.post("/documents", json={"documents": [doc]}, headers=AUTH)
    assert resp.status_code == 200 and resp.json() == {"upserted": 1, "ids": ["fresh-1"]}
    found = client.post("/search", json={"query": "zebrafish", "k": 3, "filter": {"tag": "t1"}}).json()
    assert [r["id"] for r in found["results"]] == ["fresh-1"]
    vec = client.post(
        "/embed",
        json={"texts": ["Fins a fresh note about zebrafish fins"], "role": "document"},
        headers=AUTH,
    ).json()
    expected = deployment["teacher"].encode(["Fins a fresh note about zebrafish fins"])[0]
    np.testing.assert_allclose(vec["embeddings"][0], expected, atol=1e-5)  # the teacher embedded "title text"
    got = client.get("/documents/fresh-1").json()
    assert got == {"id": "fresh-1", "title": "Fins", "text": doc["text"], "metadata": {"tag": "t1"}}
    assert client.delete("/documents/fresh-1", headers=AUTH).json() == {"deleted": "fresh-1"}
    assert client.get("/documents/fresh-1").status_code == 404
    assert client.delete("/documents/fresh-1", headers=AUTH).status_code == 404
    gone = client.post("/search", json={"query": "zebrafish", "k": 3, "filter": {"tag": "t1"}}).json()
    assert gone["results"] == []


def test_embed_roles(client):
    q = client.post("/embed", json={"texts": ["a", "b c"]}).json()
    assert (
        q["role"] == "query"
        and q["dim"] == 32
        and len(q["embeddings"]) == 2
        and q["truncated"] == [False, False]
    )
    d = client.post("/embed", json={"texts": ["a"], "role": "document"}, headers=AUTH).json()
    assert d["role"] == "document" and d["model"].startswith("st:") and len(d["embeddings"][0]) == 32


BAD_REQUESTS = [
    ("empty query", "/search", {"json": {"query": "", "k": 3}}, 422),
    ("whitespace query", "/search", {"json": {"query": "  \t\n ", "k": 3}}, 422),
    ("k zero", "/search", {"json": {"query": "x", "k": 0}}, 422),
    ("k negative", "/search", {"json": {"query": "x", "k": -4}}, 422),
    ("k over service limit", "/search", {"json": {"query": "x", "k": 21}}, 422),
    ("k over hard limit", "/search", {"json": {"query": "x", "k": 100000}}, 422),
    ("batch over limit", "/search", {"json": {"queries": ["q"] * 65}}, 422),
    ("query and queries", "/search", {"json": {"query": "x", "queries": ["y"]}}, 422),
    ("neither", "/search", {"json": {"k": 3}}, 422),
    ("unknown field", "/search", {"json": {"query": "x", "colour": 1}}, 422),
    ("unknown filter field", "/search", {"json": {"query": "x", "filter": {"colour": "red"}}}, 400),
    (
        "malformed json",
        "/search",
        {"content": b'{"query": "x",', "headers": {"content-type": "application/json"}},
        422,
    ),
    (
        "non-utf8 bytes",
        "/search",
        {"content": b'{"query": "\xff\xfe"}', "headers": {"content-type": "application/json"}},
        400,
    ),
    ("not json at all", "/search", {"content": b"query=x", "headers": {"content-type": "text/plain"}}, 422),
    (
        "duplicate ids",
        "/documents",
        {"json": {"documents": [{"id": "a", "text": "1"}, {"id": "a", "text": "2"}]}, "headers": AUTH},
        422,
    ),
    ("empty upsert", "/documents", {"json": {"documents": []}, "headers": AUTH}, 422),
    (
        "blank document",
        "/documents",
        {"json": {"documents": [{"id": "b", "text": " "}]}, "headers": AUTH},
        422,
    ),
    ("bad role", "/embed", {"json": {"texts": ["x"], "role": "teacher"}}, 422),
]


@pytest.mark.parametrize("name,path,kwargs,status", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_is_a_4xx_with_a_json_error(client, name, path, kwargs, status):
    resp = client.post(path, **kwargs)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] and body["detail"]
    assert client.get("/healthz").json()["status"] == "ok"  # and the service keeps serving


def test_stats_metrics_and_docs(client):
    stats = client.get("/stats").json()
    assert stats["index_type"] == "flat" and stats["dim"] == 32 and stats["teacher_loaded"] is True
    assert (
        stats["documents"] >= 40 and not stats["read_only"] and stats["metadata_fields"][:2] == ["group", "n"]
    )
    metrics = client.get("/metrics").text
    for name in (
        'embedkd_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/search",status="200"}',
        "embedkd_encode_seconds_count",
        "embedkd_search_seconds_count",
        "embedkd_encode_batch_size_bucket",
        'embedkd_writes_total{op="upsert"}',
    ):
        assert name in metrics
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/documents", "/documents/{doc_id}", "/embed", "/healthz", "/stats"} <= set(paths)


# Expected operations: the fuzz test fails if the schema stops listing one (it would silently go untested).
FUZZED = {
    "POST /search",
    "POST /documents",
    "GET /documents/{doc_id}",
    "DELETE /documents/{doc_id}",
    "POST /embed",
    "GET /healthz",
    "GET /stats",
}


def test_fuzz_api_from_its_openapi_schema(deployment):
    """No generated request (valid or not) makes the service fail with a 5xx.

    Schemathesis's Python API (not its pytest plugin): each operation's strategy, valid and invalid
    requests, drives a bounded Hypothesis run (10 examples, derandomized) against the live server.
    """
    url = deployment["server"].url
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # every operation in the schema can be generated
        operations[result.ok().label] = result.ok()
    assert FUZZED <= set(operations), sorted(operations)
    for _, operation in sorted(operations.items()):
        strategy = st.one_of(operation.as_strategy(mode) for mode in GenerationMode)

        @given(case=strategy)
        @settings(
            max_examples=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case):
            case.call_and_validate(base_url=url, headers=AUTH, checks=[not_a_server_error], timeout=60)

        fuzz()  # a failure reports the falsifying case: method, path and request
