"""The HTTP API over both vector stores, FAISS and Milvus (a Milvus Lite file), through ``embedkd serve``.

Each store gets an index built by ``embedkd index --store ...`` (tiny teacher), a real server subprocess
killed with ``kill -9`` during a stream of acknowledged writes and restarted, then the same API checks.
Bad Milvus targets end ``embedkd index`` / ``embedkd serve`` with one ``error:`` line.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from conftest import IN_CI
from serve_helpers import Server, write_corpus

from embedkd.cli import main as embedkd_main
from embedkd.teachers import SentenceTransformerTeacher

pytestmark = pytest.mark.e2e  # real server subprocesses, kill -9, restarts

try:
    import milvus_lite  # noqa: F401
    import pymilvus  # noqa: F401

    MILVUS_MISSING = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    MILVUS_MISSING = f"{exc.name} is not installed (pip install pymilvus milvus-lite)"

KEY = "stores-key-456"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOCS = 30
CRASH_ACKS = 12  # acknowledged writes before the kill -9
PROGRESS_BAR = re.compile(r"\| *\d+/\d+ \[")  # tqdm: "Loading weights: 100%|███| 39/39 [00:00<..."


def needs_milvus() -> None:
    if MILVUS_MISSING:
        if IN_CI:
            pytest.fail(f"{MILVUS_MISSING}; CI=true requires the Milvus tests", pytrace=False)
        pytest.skip(MILVUS_MISSING)


def cli(argv: list[str], capsys, monkeypatch) -> tuple[int, list[str]]:
    """Run ``embedkd ARGV`` in this process; its exit code and stderr lines (no logging configured),
    less the model-loading progress bars (one redrawn line on a terminal)."""
    monkeypatch.setattr("embedkd.cli._setup_logging", lambda verbosity: None)
    monkeypatch.setattr("uvicorn.run", _never_serve)
    capsys.readouterr()
    code = embedkd_main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in lines if not PROGRESS_BAR.search(line)]


def _never_serve(*args, **kwargs):
    raise AssertionError("the bad target was accepted: the service started")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def index_args(teacher: str, corpus, index_dir, cache, store: str, *extra: str) -> list[str]:
    args = ["index", "--teacher", teacher, "--corpus", str(corpus), "--index-dir", str(index_dir)]
    return [*args, "--cache-dir", str(cache), "--store", store, *extra]


def _write_stream(url: str, acked: list, deleted: list, uncertain: list, stop: threading.Event) -> None:
    """Upsert documents one by one (deleting every 4th acknowledged one) until the server dies."""
    with httpx.Client(base_url=url, timeout=30, headers=AUTH) as c:
        i = 0
        while not stop.is_set():
            doc = {"id": f"w{i}", "text": f"written document {i} on topic {i % 7}", "metadata": {"w": i}}
            try:
                if c.post("/documents", json={"documents": [doc]}).status_code != 200:
                    return
                acked.append(doc["id"])
                if i % 4 == 3:
                    victim = acked[-2]
                    try:
                        status = c.delete(f"/documents/{victim}").status_code
                    except httpx.HTTPError:
                        uncertain.append(victim)  # never acknowledged: either outcome is fine
                        raise
                    if status != 200:
                        return
                    deleted.append(victim)
            except httpx.HTTPError:
                return
            i += 1


@pytest.fixture(scope="module", params=["faiss", "milvus"])
def deployment(request, tmp_path_factory, tiny_st_factory):
    """``DOCS`` documents indexed into ``request.param``; the server is killed with ``kill -9`` during
    acknowledged writes and restarted before the API checks run."""
    store = request.param
    if store == "milvus":
        needs_milvus()
    root = tmp_path_factory.mktemp(f"stores-{store}")
    teacher_path, student_path = tiny_st_factory(hidden=32, seed=0), tiny_st_factory(hidden=32, seed=1)
    corpus = write_corpus(root / "corpus.jsonl", DOCS)
    extra = ["--uri", str(root / "docs.db"), "--collection", "docs"] if store == "milvus" else []
    argv = ["-q", *index_args(teacher_path, corpus, root / "idx", root / "cache", store, *extra)]
    assert embedkd_main(argv) == 0
    args = ["--index-dir", str(root / "idx"), "--student", student_path, "--teacher", teacher_path]
    args += ["--cache-dir", str(root / "cache"), "--max-k", "20", "--threads", "1", "--store", store]
    env = {"EMBEDKD_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    first = Server(args, root / "server.log", env=env).wait_ready()
    acked, deleted, uncertain, stop = [], [], [], threading.Event()
    writer = threading.Thread(target=_write_stream, args=(first.url, acked, deleted, uncertain, stop))
    writer.start()
    deadline = time.monotonic() + 120
    while len(acked) < CRASH_ACKS and writer.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    first.kill9()
    writer.join(timeout=60)
    stop.set()
    assert len(acked) >= CRASH_ACKS, first.tail()
    server = Server(args, root / "server.log", env=env).wait_ready()
    client = httpx.Client(base_url=server.url, timeout=60)
    live = [d for d in acked if d not in deleted and d not in uncertain]
    teacher = SentenceTransformerTeacher(teacher_path)
    yield {"store": store, "client": client, "live": live, "deleted": deleted, "teacher": teacher}
    client.close()
    assert server.stop() in (0, -signal.SIGTERM), server.tail()


def test_kill_9_loses_no_acknowledged_write(deployment):
    client, live = deployment["client"], deployment["live"]
    numbers = [int(d[1:]) for d in live]
    found = client.post("/search", json={"query": "written", "k": 20, "filter": {"w": numbers[:20]}})
    assert {r["id"] for r in found.json()["results"]} == set(live[:20])
    for doc_id in live:
        got = client.get(f"/documents/{doc_id}")
        assert got.status_code == 200 and got.json()["text"].startswith(f"written document {doc_id[1:]} ")
    for doc_id in deployment["deleted"]:
        assert client.get(f"/documents/{doc_id}").status_code == 404
        hits = client.post("/search", json={"query": "x", "k": 5, "filter": {"w": int(doc_id[1:])}})
        assert hits.json()["results"] == []
    stats = client.get("/stats").json()
    assert stats["store"] == deployment["store"]
    assert stats["documents"] - (DOCS + len(live)) in (0, 1)  # at most the one unacknowledged write
    assert stats["vectors"] == stats["documents"]


def test_search_routes_queries_to_the_student_and_documents_to_the_teacher(deployment):
    client, teacher = deployment["client"], deployment["teacher"]
    body = client.post("/search", json={"query": "heart disease cohort", "k": 5, "include_text": True}).json()
    assert len(body["results"]) == 5
    student_vec = np.asarray(
        client.post("/embed", json={"texts": ["heart disease cohort"]}).json()["embeddings"][0]
    )
    for hit in body["results"]:
        doc_vec = teacher.encode([f"{hit['title']} {hit['text']}" if hit.get("title") else hit["text"]])[0]
        cosine = student_vec @ doc_vec / np.linalg.norm(student_vec) / np.linalg.norm(doc_vec)
        assert hit["score"] == pytest.approx(cosine, abs=1e-4)
    batch = client.post("/search", json={"queries": ["heart disease cohort", "protein"], "k": 3}).json()
    assert [r["id"] for r in batch["results"][0]] == [r["id"] for r in body["results"][:3]]


def test_filters(deployment):
    client = deployment["client"]
    body = client.post("/search", json={"query": "gene", "k": 20, "filter": {"group": "g1"}}).json()
    assert {r["id"] for r in body["results"]} == {f"d{i}" for i in range(1, DOCS, 3)}
    either = client.post("/search", json={"query": "gene", "k": 20, "filter": {"n": [2, 5], "group": "g2"}})
    assert {r["id"] for r in either.json()["results"]} == {"d2", "d5"}
    unknown = client.post("/search", json={"query": "x", "filter": {"colour": "red"}})
    assert unknown.status_code == 400 and unknown.json()["error"] == "unknown_filter_field"


def test_upsert_get_delete_and_auth(deployment):
    client = deployment["client"]
    doc = {"id": "fresh-1", "text": "a note on zebrafish fins", "title": "Fins", "metadata": {"tag": "t1"}}
    assert client.post("/documents", json={"documents": [doc]}).status_code == 401
    assert client.delete("/documents/d1").status_code == 401
    wrong = client.post("/documents", json={"documents": [doc]}, headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401
    resp = client.post("/documents", json={"documents": [doc]}, headers=AUTH)
    assert resp.status_code == 200 and resp.json() == {"upserted": 1, "ids": ["fresh-1"]}
    found = client.post("/search", json={"query": "zebrafish", "k": 3, "filter": {"tag": "t1"}}).json()
    assert [r["id"] for r in found["results"]] == ["fresh-1"]
    got = client.get("/documents/fresh-1").json()
    assert got == {"id": "fresh-1", "title": "Fins", "text": doc["text"], "metadata": {"tag": "t1"}}
    assert client.delete("/documents/fresh-1", headers=AUTH).json() == {"deleted": "fresh-1"}
    assert client.get("/documents/fresh-1").status_code == 404
    assert client.delete("/documents/fresh-1", headers=AUTH).status_code == 404
    gone = client.post("/search", json={"query": "zebrafish", "k": 3, "filter": {"tag": "t1"}}).json()
    assert gone["results"] == []


def test_stats_and_healthz(deployment):
    client = deployment["client"]
    health = client.get("/healthz").json()
    stats = client.get("/stats").json()
    assert health["status"] == "ok" and health["documents"] == stats["documents"]
    assert stats["index_type"] == "flat" and stats["dim"] == 32 and stats["teacher_loaded"] is True
    assert {"group", "n", "w"} <= set(stats["metadata_fields"]) and stats["monitor"] == {"enabled": False}
    if deployment["store"] == "milvus":
        assert (stats["milvus"], stats["collection"]) == ("lite", "docs")
        assert "/" not in stats["uri"].split("#")[0]  # no file path in a public answer


@pytest.fixture(scope="module")
def lite_index(tmp_path_factory, tiny_st_factory):
    """A Milvus Lite index of 8 documents built in this process (the bad-target checks open it here)."""
    needs_milvus()
    root = tmp_path_factory.mktemp("stores-bad")
    teacher = tiny_st_factory(hidden=32, seed=0)
    corpus = write_corpus(root / "corpus.jsonl", 8)
    milvus = ["--uri", str(root / "a.db"), "--collection", "docs"]
    assert (
        embedkd_main(["-q", *index_args(teacher, corpus, root / "a", root / "cache", "milvus", *milvus)]) == 0
    )
    return {"root": root, "teacher": teacher, "corpus": corpus}


def test_index_refuses_bad_milvus_targets(lite_index, tiny_st_factory, capsys, monkeypatch):
    root, corpus = lite_index["root"], lite_index["corpus"]
    other = tiny_st_factory(hidden=32, seed=2)
    cases = [
        (
            lite_index["teacher"],
            "x1",
            ["--uri", str(root / "a.db"), "--index-type", "ivf_pq"],
            "'ivf_pq' is not offered by Milvus Lite",
        ),
        (lite_index["teacher"], "x2", ["--uri", f"http://127.0.0.1:{closed_port()}"], "did not answer"),
        (other, "x3", ["--uri", str(root / "a.db"), "--collection", "docs"], "holds vectors of teacher"),
        (
            lite_index["teacher"],
            "x4",
            ["--uri", str(root / "a.db"), "--collection", "docs"],
            "already holds 8 documents; pass --overwrite",
        ),
        (lite_index["teacher"], "x5", ["--index-type", "ivf_sq8"], "ivf_sq8 is a Milvus index"),
    ]
    for teacher, name, extra, message in cases:
        store = "faiss" if name == "x5" else "milvus"
        code, err = cli(
            index_args(teacher, corpus, root / name, root / "cache", store, *extra), capsys, monkeypatch
        )
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
        assert not (root / name).exists()


def test_serve_refuses_bad_milvus_targets(lite_index, tiny_st_factory, capsys, monkeypatch):
    root, teacher = lite_index["root"], lite_index["teacher"]
    other = tiny_st_factory(hidden=32, seed=2)
    milvus = ["--uri", str(root / "b.db"), "--collection", "docs"]
    argv = ["-q", *index_args(other, lite_index["corpus"], root / "b", root / "cache", "milvus", *milvus)]
    assert embedkd_main(argv) == 0
    serve = ["serve", "--student", teacher, "--teacher", teacher]
    cases = [
        (["--index-dir", str(root / "a"), "--read-only"], "Milvus Lite file, which one process owns"),
        (["--index-dir", str(root / "b"), "--uri", str(root / "a.db")], "holds vectors of teacher"),
        (["--index-dir", str(root / "a"), "--uri", f"http://127.0.0.1:{closed_port()}"], "did not answer"),
        (["--index-dir", str(root / "a"), "--store", "faiss"], "is a milvus index"),
        (["--index-dir", str(root / "a"), "--uri", str(root / "gone.db")], "does not exist"),
    ]
    for extra, message in cases:
        code, err = cli([*serve, *extra], capsys, monkeypatch)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
