"""MilvusStore against a real Milvus Lite file in tmp_path (and an unreachable server URL)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, REPO

try:
    import milvus_lite  # noqa: F401
    import pymilvus  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    _reason = f"{exc.name} is not installed (pip install pymilvus milvus-lite)"
    if IN_CI:
        pytest.fail(f"{_reason}; CI=true requires the Milvus store tests", pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

from embedkd.errors import ConfigError, EmbedkdError
from serve.milvus_store import MilvusStore
from serve.vector_store import StoreMismatchError, StoreReadOnlyError, StoreUnavailableError, TeacherIdentity

DIM = 16
TEACHER = TeacherIdentity(teacher_id="fake-teacher:w0123456789", teacher_name="/models/fake", dim=DIM)
ODD = ['he said "hi"', "it's", "back\\slash\\", 'x" or id != "']


@dataclass(frozen=True)
class Document:
    """What the store reads from a document (the shape of ``serve.store.Document``)."""

    id: str
    text: str
    title: str | None = None
    metadata: dict = field(default_factory=dict)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def corpus(n: int, seed: int = 0) -> tuple[list[Document], np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = [
        Document(
            id=f"d{i}",
            text=f"text {i}",
            title=None if i % 5 == 0 else f"title {i}",
            metadata={"group": f"g{i % 3}", "n": i, "even": i % 2 == 0, "odd": ODD[i % len(ODD)]},
        )
        for i in range(n)
    ]
    return docs, rng.normal(size=(n, DIM)).astype(np.float32)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int, allowed=None) -> list[list[str]]:
    scores = unit(queries) @ unit(vectors).T
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    return [[f"d{j}" for j in np.argsort(-row, kind="stable")[:k] if np.isfinite(row[j])] for row in scores]


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "docs.db")


@pytest.fixture
def filled(db):
    docs, vecs = corpus(60)
    store = MilvusStore.open(db, TEACHER, collection="docs")
    store.upsert(docs, vecs)
    yield store, docs, vecs
    store.close()


def test_search_equals_brute_force_on_flat(filled):
    store, docs, vecs = filled
    assert store.count() == 60
    queries = np.random.default_rng(1).normal(size=(5, DIM)).astype(np.float32)
    hits = store.search(queries, k=10)
    assert [[h.doc_id for h in row] for row in hits] == brute_force(vecs, queries, 10)
    expected = np.sort(unit(queries) @ unit(vecs).T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose([[h.score for h in row] for row in hits], expected, atol=1e-5)
    doc_id, score, title, text, metadata = hits[0][0]  # unpacks as the tuple the service expects
    i = int(doc_id[1:])
    assert (title, text, metadata) == (docs[i].title, docs[i].text, docs[i].metadata)
    assert store.search(queries[:1], k=3, include_text=False)[0][0].text is None


def test_filters_match_brute_force_and_resist_injection(filled):
    store, docs, vecs = filled
    q = vecs[:3] + 0.1
    group = np.array([d.metadata["group"] == "g1" for d in docs])
    got = store.search(q, k=7, filters={"group": "g1"})
    assert [[h.doc_id for h in row] for row in got] == brute_force(vecs, q, 7, group)
    either = np.array([d.metadata["n"] in (4, 9, 30) for d in docs])
    got = store.search(q, k=5, filters={"n": [4, 9, 30]})
    assert [[h.doc_id for h in row] for row in got] == brute_force(vecs, q, 5, either)
    both = np.array([d.metadata["even"] and d.metadata["group"] == "g0" for d in docs])
    got = store.search(q, k=60, filters={"even": True, "group": "g0"})
    assert [[h.doc_id for h in row] for row in got] == brute_force(vecs, q, 60, both)
    for value in ODD:  # quotes, backslashes and an injection attempt are compared as plain text
        wanted = {d.id for d in docs if d.metadata["odd"] == value}
        got = {h.doc_id for h in store.search(q[:1], k=60, filters={"odd": value})[0]}
        assert got == wanted and len(wanted) == 15
    assert store.search(q[:1], k=5, filters={'odd"] == "x" or metadata["n': 1}) == [[]]
    assert store.search(q[:1], k=5, filters={"group": "nope"}) == [[]]
    assert store.search(q[:1], k=5, filters={"group": []}) == [[]]
    with pytest.raises(ConfigError, match="'group'"):
        store.search(q[:1], k=5, filters={"group": None})


def test_upsert_replaces_and_delete_removes(filled):
    store, docs, vecs = filled
    new = Document(id="d7", text="rewritten", title="new title", metadata={"group": "moved"})
    store.upsert([new], -vecs[7:8])
    assert store.count() == 60
    got = store.get(["d7"], with_vectors=True)["d7"]
    assert (got.text, got.title, got.metadata) == ("rewritten", "new title", {"group": "moved"})
    np.testing.assert_allclose(got.vector, unit(-vecs[7:8])[0], atol=1e-6)
    top = store.search(-vecs[7:8], k=1)[0][0]
    assert (top.doc_id, top.text) == ("d7", "rewritten") and top.score == pytest.approx(1.0, abs=1e-5)
    assert store.search(vecs[7:8], k=60, filters={"group": "g1"})[0][0].doc_id != "d7"

    assert store.delete(["d7", "d8", "missing"]) == 2
    assert store.count() == 58 and store.get(["d7", "d8", "d9"]).keys() == {"d9"}
    assert "d7" not in {h.doc_id for h in store.search(-vecs[7:8], k=58)[0]}
    assert store.delete(["d7"]) == 0


def test_reopen_after_close_keeps_data(db):
    from milvus_lite.server_manager import server_manager_instance

    docs, vecs = corpus(20)
    with MilvusStore.open(db, TEACHER, collection="docs") as store:
        store.upsert(docs, vecs)
        store.delete(["d3"])
    # closing the last store stopped the embedded server: the reopen below reads the file afresh
    assert str(Path(db).resolve()) not in server_manager_instance._servers
    with MilvusStore.open(db, TEACHER, collection="docs") as store:
        assert store.count() == 19 and "d3" not in store.get(["d3", "d4"])
        assert store.search(vecs[4:5], k=1)[0][0].doc_id == "d4"
        assert store.stats()["documents"] == 19


def test_wrong_teacher_is_one_clear_error(db):
    MilvusStore.open(db, TEACHER, collection="docs").close()
    other = TeacherIdentity(teacher_id="other-teacher:wfedcba", teacher_name="other", dim=DIM)
    with pytest.raises(StoreMismatchError, match="fake-teacher:w0123456789.*other-teacher:wfedcba"):
        MilvusStore.open(db, other, collection="docs")
    renamed = TeacherIdentity(teacher_id=TEACHER.teacher_id, teacher_name="/moved/fake", dim=DIM)
    MilvusStore.open(db, renamed, collection="docs").close()  # a moved folder keeps its weights digest


def test_a_faiss_index_meta_is_a_teacher_identity(db):
    from serve.index import IndexMeta

    meta = IndexMeta(
        teacher_id=TEACHER.teacher_id, teacher_name="/elsewhere/fake", dim=DIM, index_type="hnsw"
    )
    MilvusStore.open(db, TEACHER, collection="docs").close()
    with MilvusStore.open(db, meta, collection="docs") as store:
        assert store.identity.teacher_id == TEACHER.teacher_id and store.identity.normalize


def test_a_foreign_collection_is_refused(db):
    from pymilvus import MilvusClient

    client = MilvusClient(db)
    client.create_collection("theirs", dimension=DIM)
    client.close()
    with pytest.raises(StoreMismatchError, match="not created by embedkd"):
        MilvusStore.open(db, TEACHER, collection="theirs")


def test_options_and_targets_are_checked_before_anything_is_created(db, tmp_path):
    with pytest.raises(ConfigError, match="'ivf_pq' is not offered by Milvus Lite"):
        MilvusStore.open(db, TEACHER, index_type="ivf_pq")
    with pytest.raises(ConfigError, match="use a Milvus server .* for replicas"):
        MilvusStore.open(db, TEACHER, read_only=True)
    assert not Path(db).exists()
    with pytest.raises(ConfigError, match="neither a Milvus Lite file"):
        MilvusStore.open(str(tmp_path / "docs.sqlite"), TEACHER)
    with pytest.raises(ConfigError, match="collection name"):
        MilvusStore.open(db, TEACHER, collection="has-dash")
    with pytest.raises(ConfigError, match="unknown Milvus option"):
        MilvusStore.open(db, TEACHER, colection="typo")


def test_bad_writes_are_refused_before_milvus(filled):
    store, docs, vecs = filled
    with pytest.raises(EmbedkdError, match="dimension 16"):
        store.upsert(docs[:1], np.zeros((1, DIM + 1), dtype=np.float32))
    with pytest.raises(EmbedkdError, match="'big': text is 70000 bytes"):
        store.upsert([Document(id="big", text="x" * 70_000)], vecs[:1])
    with pytest.raises(EmbedkdError, match="duplicate"):
        store.upsert(docs[:1] * 2, vecs[:2])
    store.read_only = True
    with pytest.raises(StoreReadOnlyError):
        store.delete(["d1"])
    assert store.count() == 60


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast():
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"Milvus at http://127\.0\.0\.1:\d+ did not answer"):
        MilvusStore.open(f"http://127.0.0.1:{_closed_port()}", TEACHER, connect_timeout=2)
    assert time.monotonic() - start < 5
    with socket.socket() as silent:  # accepts TCP connections but never speaks gRPC
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="timeout 1 s"):
            MilvusStore.open(f"http://127.0.0.1:{silent.getsockname()[1]}", TEACHER, connect_timeout=1)
        assert time.monotonic() - start < 5


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat", "ivf_sq8"])
def test_approximate_indexes_build_and_answer(db, kind):
    docs, vecs = corpus(300, seed=2)
    with MilvusStore.open(db, TEACHER, collection="docs", index_type=kind) as store:
        store.upsert(docs, vecs)
        store.flush()  # Milvus Lite builds the index when it seals a segment
        hits = store.search(vecs[:20], k=5)
        assert all(len(row) == 5 for row in hits)
        recall = np.mean([row[0].doc_id == f"d{i}" for i, row in enumerate(hits)])
        assert recall >= 0.9, f"{kind}: top-1 self recall {recall}"
        assert len(store.search(vecs[:2], k=5, filters={"group": "g2"})[1]) == 5
    with MilvusStore.open(db, TEACHER, collection="docs") as store:  # the index survives a reopen
        assert store.index_type.value == kind
        assert store.search(vecs[5:6], k=1)[0][0].doc_id == "d5"


@pytest.mark.e2e
def test_index_type_change_rebuilds(db):
    docs, vecs = corpus(50)
    with MilvusStore.open(db, TEACHER, collection="docs") as store:
        store.upsert(docs, vecs)
        store.flush()
    with MilvusStore.open(db, TEACHER, collection="docs", index_type="hnsw") as store:
        assert store.index_type.value == "hnsw" and store.count() == 50
        assert store.search(vecs[9:10], k=1)[0][0].doc_id == "d9"


@pytest.mark.e2e
def test_acknowledged_writes_survive_a_killed_process(db):
    """Milvus Lite hands each write to the OS before answering: SIGKILL right after loses nothing."""
    script = textwrap.dedent(
        f"""
        import json, sys, numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from serve.milvus_store import MilvusStore
        from serve.vector_store import TeacherIdentity
        from types import SimpleNamespace as Document
        store = MilvusStore.open({db!r}, TeacherIdentity(**json.loads(sys.argv[1])), collection="docs")
        vecs = np.random.default_rng(0).normal(size=(30, {DIM})).astype(np.float32)
        docs = [Document(id=f"k{{i}}", text=f"kept {{i}}", title=None, metadata={{}}) for i in range(30)]
        store.upsert(docs, vecs)
        store.delete(["k0"])
        print("ACK", flush=True)
        import time; time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(TEACHER.to_dict())],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert proc.stdout.readline().strip() == "ACK"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with MilvusStore.open(db, TEACHER, collection="docs") as store:
        assert store.count() == 29
        assert store.get(["k0", "k29"]).keys() == {"k29"}


@pytest.mark.e2e
def test_a_second_process_on_a_lite_file_gets_one_clear_error(db):
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from serve.milvus_store import MilvusStore
        from serve.vector_store import TeacherIdentity
        try:
            MilvusStore.open({db!r}, TeacherIdentity(**json.loads(sys.argv[1])), collection="docs")
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    with MilvusStore.open(db, TEACHER, collection="docs"):
        out = subprocess.run(
            [sys.executable, "-c", script, json.dumps(TEACHER.to_dict())],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    assert out.startswith("EmbedkdError cannot open Milvus Lite file") and "another process" in out


@pytest.fixture
def lite_server(tmp_path):
    """``http://127.0.0.1:PORT`` of Milvus Lite's own gRPC server in a subprocess: a stand-in Milvus server."""
    port = _closed_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "milvus_lite",
            "server",
            "--data-dir",
            str(tmp_path / "srv"),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the Milvus Lite gRPC server did not start")
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}", proc
    proc.kill()
    proc.wait(timeout=30)


@pytest.mark.e2e
def test_server_writer_and_read_only_replica(lite_server):
    uri, proc = lite_server
    docs, vecs = corpus(30)
    writer = MilvusStore.open(uri, TEACHER, collection="docs", request_timeout=3)
    writer.upsert(docs, vecs)
    with pytest.raises(StoreMismatchError, match="does not exist"):
        MilvusStore.open(uri, TEACHER, collection="other", read_only=True)
    with MilvusStore.open(uri, TEACHER, collection="docs", read_only=True) as replica:
        assert replica.count() == 30
        assert replica.search(vecs[3:4], k=1)[0][0].doc_id == "d3"
        with pytest.raises(StoreReadOnlyError):
            replica.upsert(docs[:1], vecs[:1])
        writer.delete(["d3"])
        assert replica.count() == 29  # strong consistency: the replica sees the acknowledged delete
    proc.kill()
    proc.wait(timeout=30)
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="did not answer"):
        writer.upsert(docs[:1], vecs[:1])
    assert time.monotonic() - start < 10
    writer.close()
