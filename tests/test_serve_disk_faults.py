"""Storage faults of the service: full disk, read-only filesystem, damaged query log, unbounded searches.

A write that could not be made durable is refused with a clear storage error and leaves nothing
behind; a write that was committed is acknowledged even when the snapshot after it fails, and a
failed snapshot removes what it wrote. The real-filesystem tests mount a small tmpfs (skipped where
that is not permitted).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess

import numpy as np
import pytest
from hash_serve import fill_disk, mount_tmpfs, unmount
from serve_helpers import HashEncoder, HashTeacher
from state_helpers import (
    assert_writes_kept,
    build_hash_index,
    crash,
    open_service,
    snapshot_entries,
    top,
    write_some,
)

from serve.errors import ServiceStateError, StorageFullError, StorageIOError
from serve.querylog import QueryLog, read_query_log
from serve.service import SearchService, ServiceOptions
from serve.store import Document


@pytest.fixture
def index_dir(tmp_path):
    return build_hash_index(tmp_path)


# --------------------------------------------------------------------------- full disk
def _fail_shards(monkeypatch):
    import serve.snapshot

    def no_space(path, blob):
        path.write_bytes(b"partial")  # what a full disk leaves before it refuses
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(serve.snapshot, "_write_shard", no_space)


def test_failed_snapshot_acknowledges_the_write_and_leaves_nothing_behind(index_dir, monkeypatch):
    svc = open_service(index_dir, snapshot_every=1, snapshot_retry_seconds=0)
    _fail_shards(monkeypatch)
    assert svc.upsert([Document("new", "a brand new document")]) == 1  # durable: acknowledged
    assert snapshot_entries(index_dir) == ["CURRENT", "snap-000000000000"]
    assert "disk is full" in svc.stats()["snapshot_error"]
    assert top(svc, "a brand new document") == ["new"]
    monkeypatch.undo()
    svc.upsert([Document("more", "space came back")])
    assert svc.snapshot_name == "snap-000000000002" and svc.stats()["snapshot_error"] is None
    assert snapshot_entries(index_dir) == ["CURRENT", "snap-000000000002"]
    svc.close()


def test_writer_restarts_on_a_full_disk_and_catches_up_when_space_returns(index_dir, monkeypatch):
    svc = open_service(index_dir, snapshot_every=0)
    write_some(svc)
    crash(svc)
    _fail_shards(monkeypatch)
    again = open_service(index_dir)  # replays; its snapshot fails; it starts anyway
    assert again.snapshot_name == "snap-000000000000" and again.applied_seq == 3
    assert_writes_kept(again)
    again.upsert([Document("w", "written while the disk is full")])
    assert snapshot_entries(index_dir) == ["CURRENT", "snap-000000000000"]
    monkeypatch.undo()
    again.close()  # space is back: the shutdown snapshot succeeds
    assert snapshot_entries(index_dir) == ["CURRENT", "snap-000000000004"]
    last = open_service(index_dir)
    assert last.applied_seq == 4 and top(last, "written while the disk is full") == ["w"]
    last.close()
    svc.close()


def test_store_write_on_a_full_disk_raises_disk_full_and_stores_nothing(index_dir):

    svc = open_service(index_dir)
    conn = svc.store._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    with pytest.raises(StorageFullError, match="storing documents .* failed: the disk is full"):
        svc.upsert([Document("big", "x " * 50_000)])
    assert svc.store.get("big") is None and svc.store.count() == 30 and svc.applied_seq == 0
    conn.execute("PRAGMA max_page_count = 1073741823")
    svc.upsert([Document("big", "x " * 50_000)])
    assert svc.store.get("big").vid == 31 and svc.applied_seq == 1
    svc.close()


# ----------------------------------------------------------------------- read-only folder
def test_read_only_folder_is_one_clear_error(index_dir):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod cannot make a folder read-only (see the tmpfs test)")
    os.chmod(index_dir, 0o555)
    try:
        with pytest.raises(
            StorageIOError, match="cannot write to index directory .* serve it with --read-only"
        ):
            open_service(index_dir)
    finally:
        os.chmod(index_dir, 0o755)


@pytest.fixture
def tmpfs(tmp_path):
    """A real 4 MiB filesystem (tmpfs) at ``tmp_path/fs``; skipped where mounting is not permitted."""
    mnt = tmp_path / "fs"
    mount_tmpfs(mnt, "size=4m")
    yield mnt
    unmount(mnt)


def test_real_full_disk_refuses_writes_keeps_acknowledged_ones_and_recovers(index_dir, tmpfs):

    idx = tmpfs / "idx"
    shutil.copytree(index_dir, idx)
    cache = str(index_dir.parent / "cache")  # the teacher cache is on another disk
    opts = {"cache_dir": cache, "snapshot_every": 1, "snapshot_retry_seconds": 0}
    svc = SearchService.open(idx, HashEncoder(), HashTeacher(), ServiceOptions(**opts))
    fill_disk(tmpfs)
    with pytest.raises(StorageFullError, match="disk is full"):
        svc.upsert([Document("big", "y " * 400_000)])
    assert svc.store.get("big") is None and svc.applied_seq == 0
    assert snapshot_entries(idx) == ["CURRENT", "snap-000000000000"]  # no debris of failed snapshots
    crash(svc)  # killed while the disk is full: the writer must start again all the same
    again = SearchService.open(idx, HashEncoder(), HashTeacher(), ServiceOptions(**opts))
    assert again.store.count() == 30
    (tmpfs / "filler").unlink()
    again.upsert([Document("big", "y " * 400_000)])
    assert again.snapshot_name == "snap-000000000001" and top(again, "y " * 400_000) == ["big"]
    again.close()
    svc.close()


def test_read_only_filesystem_refuses_the_writer_and_serves_readers(index_dir, tmpfs):
    idx = tmpfs / "idx"
    shutil.copytree(index_dir, idx)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        with pytest.raises(
            StorageIOError, match=r"cannot write to index directory .*\(Read-only file system"
        ):
            open_service(idx)
        reader = open_service(idx, teacher=False)
        doc = reader.store.get("d4")
        assert top(reader, f"{doc.title} {doc.text}") == ["d4"]
        reader.close()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=False)


# ------------------------------------------------------------------- bounded search work
def test_many_queries_with_large_k_under_a_small_sqlite_variable_limit(index_dir):
    svc = open_service(index_dir, teacher=False)
    svc.store._conn().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # as older SQLite builds
    vecs, _ = svc.encode_queries([f"query {i}" for i in range(256)])
    rows = svc.search(vecs, 1000)
    assert len(rows) == 256 and all(len(row) == 30 for row in rows)  # 7,680 ids looked up, chunked
    filtered = svc.search(vecs, 1000, {"group": "g1"})
    assert all(sorted(h.id for h in row) == sorted(f"d{i}" for i in range(1, 30, 3)) for row in filtered)
    svc.close()


def test_filtered_search_stops_at_max_candidates_and_says_so(tmp_path):
    svc = open_service(build_hash_index(tmp_path, 600, groups=300), teacher=False, max_candidates=40)
    vecs, _ = svc.encode_queries(["anything"])
    looked_up = []
    lookup = svc.store.lookup
    svc.store.lookup = lambda vids, **kw: looked_up.append(len(vids)) or lookup(vids, **kw)
    result = svc.search_detailed(vecs, 5, {"group": "g7"})  # 2 of 600 documents match
    assert result.partial == [True] and len(result.hits[0]) <= 2
    assert sum(looked_up) <= 40 + 5  # the candidates (each once), then the hits
    svc.options = ServiceOptions(max_candidates=10_000)
    full = svc.search_detailed(vecs, 5, {"group": "g7"})
    assert full.partial == [False] and sorted(h.id for h in full.hits[0]) == ["d307", "d7"]
    svc.close()


# ---------------------------------------------------------------------------- query log
def test_query_log_refuses_a_damaged_file(tmp_path):
    log = QueryLog.in_index(tmp_path, "t", 4)
    log.append(["q1", "q2"], np.ones((2, 4)))
    log.close()
    path = tmp_path / "query_log.sqlite"
    os.truncate(path, 4096 + 10)
    with pytest.raises(ServiceStateError, match=r"query log .* is corrupt .*; move it away or delete it"):
        QueryLog.in_index(tmp_path, "t", 4)
    with pytest.raises(ServiceStateError, match=r"query log .* is corrupt"):
        read_query_log(tmp_path)
    path.write_bytes(os.urandom(8192))
    with pytest.raises(ServiceStateError, match=r"query log .* is corrupt \(file is not a database\)"):
        QueryLog.in_index(tmp_path, "t", 4)
