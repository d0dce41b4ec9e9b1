"""Faults of the service's state and storage, answered over real HTTP by a real ``embedkd serve`` process.

The server is the whole CLI and uvicorn over the hash models (:mod:`hash_serve`), so each starts in
seconds. Storage faults are real: a small tmpfs whose bytes (507 ``disk_full``) or inodes (a snapshot
that fails after a durable write) run out, and a file-size limit set on the server process (503
``io_error``: SQLite's "disk I/O error"). Corruption found while serving is a JSON 500 ``state_corrupt``.
"""

from __future__ import annotations

import json
import resource
import shutil
import sqlite3

import httpx
import pytest
from hash_serve import HashServer, fill_disk, mount_tmpfs, unmount
from state_helpers import build_hash_index

pytestmark = pytest.mark.e2e  # server subprocesses

KEY = "faults-key-3c"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _serve(tmp_path, idx, *extra: str, name: str = "server") -> HashServer:
    args = ["--index-dir", str(idx), "--student", "hash", "--teacher", "hash-teacher"]
    args += ["--cache-dir", str(tmp_path / "cache"), *extra]
    return HashServer(args, tmp_path / f"{name}.log", env={"EMBEDKD_API_KEY": KEY}).wait_ready(120)


@pytest.fixture
def running(tmp_path):
    """Start servers with :func:`_serve`; every one is stopped at the end."""
    servers = []

    def start(idx, *extra: str, name: str = "server") -> tuple[HashServer, httpx.Client]:
        server = _serve(tmp_path, idx, *extra, name=name)
        servers.append(server)
        return server, httpx.Client(base_url=server.url, timeout=60)

    yield start
    for server in servers:
        server.stop()


def _copy_to(tmp_path, mnt, n: int = 30) -> object:
    """A hash index built on the ordinary disk, copied into ``mnt`` (its teacher cache stays outside)."""
    shutil.copytree(build_hash_index(tmp_path, n), mnt / "idx")
    return mnt / "idx"


def _upsert(client: httpx.Client, *docs: tuple[str, str]) -> httpx.Response:
    body = {"documents": [{"id": i, "text": t} for i, t in docs]}
    return client.post("/documents", json=body, headers=AUTH)


def _top(client: httpx.Client, text: str, k: int = 1) -> list[str]:
    resp = client.post("/search", json={"query": text, "k": k})
    assert resp.status_code == 200, resp.text
    return [hit["id"] for hit in resp.json()["results"]]


def _assert_error(resp: httpx.Response, status: int, code: str, says: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["error"] == code and says in body["detail"], body
    assert "/tmp/" not in body["detail"] and "Traceback" not in resp.text  # no paths, no traceback


# ------------------------------------------------------------------------- bounded filtered search
def test_filtered_search_over_the_cap_answers_partial(tmp_path, running):
    idx = build_hash_index(tmp_path, 600, groups=300)  # each group: 2 of 600 documents
    _, client = running(idx, "--max-candidates", "40")
    one = client.post("/search", json={"query": "anything", "k": 5, "filter": {"group": "g7"}})
    assert one.status_code == 200 and one.json()["partial"] is True
    assert {h["id"] for h in one.json()["results"]} <= {"d7", "d307"}
    many = client.post(
        "/search",
        json={"queries": ["anything", "else"], "k": 5, "filter": {"group": [f"g{i}" for i in range(150)]}},
    )
    body = many.json()  # half the documents match: 5 of them within 40 candidates
    assert many.status_code == 200 and body["partial"] == [False, False]
    assert all(len(row) == 5 for row in body["results"])
    plain = client.post("/search", json={"query": "anything", "k": 5}).json()
    assert plain["partial"] is False and len(plain["results"]) == 5


# --------------------------------------------------------------------------------- start-up checks
def test_disagreeing_state_refuses_to_start_unless_no_verify(tmp_path, running):
    idx = build_hash_index(tmp_path)
    conn = sqlite3.connect(idx / "docs.sqlite")  # a document lost without its write-ahead record
    conn.execute("DELETE FROM docs WHERE id = 'd5'")
    conn.commit()
    conn.close()
    refused = HashServer(["--index-dir", str(idx), "--student", "hash"], tmp_path / "refused.log")
    assert refused.proc.wait(timeout=120) == 2
    log = refused.tail()
    refused.stop()
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "belong to no stored document" in errors[0], log
    assert "embedkd index --repair" in errors[0]
    _, client = running(idx, "--no-verify", name="unverified")  # serves; the stale vector is dropped
    assert len(_top(client, "anything", 30)) == 29 and client.get("/stats").json()["documents"] == 29


# ------------------------------------------------------------------------ corruption while serving
def test_corruption_found_while_serving_answers_state_corrupt(tmp_path, running):
    idx = build_hash_index(tmp_path)
    _, client = running(idx)
    assert client.get("/documents/d3").status_code == 200
    conn = sqlite3.connect(idx / "docs.sqlite")  # a damaged row, as a bad disk sector leaves it
    conn.execute("""UPDATE docs SET metadata = '{"group": ' WHERE id = 'd3'""")
    conn.commit()
    conn.close()
    resp = client.post("/search", json={"query": "anything", "k": 30})
    _assert_error(resp, 500, "state_corrupt", "the document store row of 'd3' (vector id 4) is damaged")
    assert "embedkd index --overwrite" in resp.json()["detail"]  # says how to recover
    _assert_error(client.get("/documents/d3"), 500, "state_corrupt", "is damaged")
    assert client.get("/documents/d4").status_code == 200 and client.get("/healthz").status_code == 200


# ------------------------------------------------------------------------------ storage failures
@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs at ``tmp_path/fs``."""
    mount_tmpfs(tmp_path / "fs", "size=4m")
    yield tmp_path / "fs"
    unmount(tmp_path / "fs")


def test_write_on_a_full_disk_answers_507_and_stores_nothing(tmp_path, small_fs, running):
    idx = _copy_to(tmp_path, small_fs)
    _, client = running(idx, "--max-teacher-tokens", "1000000")
    docs = [(f"big{i}", f"{i} " + "y " * 75_000) for i in range(4)]  # 600 KB: more than the WAL file holds
    fill_disk(small_fs)
    _assert_error(_upsert(client, *docs), 507, "disk_full", "the disk is full")
    assert all(client.get(f"/documents/{i}").status_code == 404 for i, _ in docs)
    stats = client.get("/stats").json()
    assert stats["documents"] == 30 and stats["applied_seq"] == 0
    assert not any(i.startswith("big") for i in _top(client, "anything", 34))
    (small_fs / "filler").unlink()  # space is back: the same write succeeds
    assert _upsert(client, *docs).json() == {"upserted": 4, "ids": [i for i, _ in docs]}
    assert client.get("/documents/big2").json()["text"] == docs[2][1]
    assert sum(i.startswith("big") for i in _top(client, "anything", 34)) == 4
    assert client.get("/stats").json()["documents"] == 34


def test_another_io_failure_answers_503_and_changes_nothing(tmp_path, running):
    if not hasattr(resource, "prlimit"):
        pytest.skip("resource.prlimit is Linux-only: cannot set the server's file-size limit")
    idx = build_hash_index(tmp_path)
    server, client = running(idx)
    # Writes past 4 KiB of any file now fail with EFBIG: SQLite reports a "disk I/O error".
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    try:
        resp = client.delete("/documents/d4", headers=AUTH)
    finally:
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    _assert_error(resp, 503, "io_error", "disk I/O error")
    assert client.get("/documents/d4").status_code == 200 and client.get("/stats").json()["documents"] == 30
    assert client.delete("/documents/d4", headers=AUTH).json() == {"deleted": "d4"}  # the limit is gone
    assert client.get("/documents/d4").status_code == 404


@pytest.fixture
def few_inodes(tmp_path):
    """A tmpfs at ``tmp_path/fs`` with room for 64 files (bytes to spare)."""
    mount_tmpfs(tmp_path / "fs", "size=16m,nr_inodes=64")
    yield tmp_path / "fs"
    unmount(tmp_path / "fs")


def _use_all_inodes(folder) -> list:
    made = []
    try:
        while True:
            made.append(folder / f"f{len(made)}")
            made[-1].touch()
    except OSError as exc:
        assert exc.errno == 28
    return made[:-1]


def test_durable_write_whose_snapshot_fails_is_acknowledged(tmp_path, few_inodes, running):
    idx = _copy_to(tmp_path, few_inodes)
    extra = ("--snapshot-every", "1", "--snapshot-retry-seconds", "0")
    server, client = running(idx, *extra)
    files = _use_all_inodes(few_inodes)  # the store's files exist; a snapshot needs new ones
    assert _upsert(client, ("new", "a brand new document")).status_code == 200
    stats = client.get("/stats").json()
    assert "disk is full" in stats["snapshot_error"] and stats["snapshot"] == "snap-000000000000"
    assert sorted(p.name for p in (idx / "snapshots").iterdir()) == ["CURRENT", "snap-000000000000"]
    assert _top(client, "a brand new document") == ["new"]
    server.kill9()  # the acknowledged write lives in the write-ahead log, not in any snapshot
    _, client = running(idx, *extra, name="restarted")  # starts on the full disk all the same
    assert _top(client, "a brand new document") == ["new"]
    for path in files:
        path.unlink()
    assert _upsert(client, ("more", "space came back")).status_code == 200
    stats = client.get("/stats").json()
    assert stats["snapshot_error"] is None and stats["snapshot"] == "snap-000000000002"
    manifest = json.loads((idx / "snapshots" / "snap-000000000002" / "manifest.json").read_text())
    assert manifest["documents"] == 32
