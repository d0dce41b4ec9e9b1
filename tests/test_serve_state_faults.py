"""The service's state under damage: every fault found by probing a real server is refused or repaired.

Each test damages real files of a real index directory (emptied, removed, truncated, page-corrupted
``docs.sqlite``; a lost or garbled SQLite ``-wal``; an edited manifest; a binary ``CURRENT``; a store
older than the snapshot) and checks that the service refuses to start with one clear
:class:`~serve.errors.ServiceStateError`, or keeps every acknowledged write, and that
``embedkd index --repair`` brings it back. Disk-full, read-only and bounded-search faults:
``test_serve_disk_faults.py``.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from serve_helpers import HashTeacher
from state_helpers import (
    assert_writes_kept,
    build_hash_index,
    crash,
    open_service,
    top,
    write_some,
)

from embedkd.errors import EmbedkdError
from serve.errors import ServiceStateError
from serve.repair import repair_index
from serve.snapshot import manifest_checksum
from serve.store import Document


@pytest.fixture
def index_dir(tmp_path):
    return build_hash_index(tmp_path)


def _manifest(index_dir):
    return next((index_dir / "snapshots").glob("snap-*")) / "manifest.json"


# ------------------------------------------------------------------ the document store itself
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("emptied", r"docs\.sqlite is empty \(it has no tables\); restore docs\.sqlite"),
        ("removed", r"docs\.sqlite does not exist; restore docs\.sqlite"),
        ("truncated", r"docs\.sqlite is corrupt \(database disk image is malformed\)"),
        (
            "page_corrupted",
            r"docs\.sqlite is corrupt \((SQLite quick_check: .*|database disk image is malformed)\)",
        ),
    ],
)
@pytest.mark.parametrize("teacher", [True, False], ids=["writer", "reader"])
def test_damaged_store_refuses_to_start_and_is_not_recreated(index_dir, damage, message, teacher):
    store = index_dir / "docs.sqlite"
    if damage == "emptied":
        store.write_bytes(b"")
    elif damage == "removed":
        store.unlink()
    elif damage == "truncated":
        os.truncate(store, store.stat().st_size // 2)
    else:  # scribble over the documents table's root page (page 2), as a bad sector would
        data = bytearray(store.read_bytes())
        rng = np.random.default_rng(0)
        data[4096 + 1000 : 4096 + 3000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
        store.write_bytes(bytes(data))
    with pytest.raises(ServiceStateError, match=message):
        open_service(index_dir, teacher=teacher)
    assert store.exists() == (damage != "removed")  # never silently replaced by a new, empty store
    if damage == "emptied":
        assert store.stat().st_size == 0


@pytest.mark.parametrize("damage", ["removed", "garbled"])
def test_lost_or_garbled_sqlite_wal_file_loses_no_acknowledged_write(index_dir, tmp_path, damage):
    svc = open_service(index_dir, snapshot_every=0)
    write_some(svc)
    crash(svc)
    copy = tmp_path / "after-crash"
    shutil.copytree(index_dir, copy)  # the files exactly as a kill -9 leaves them
    svc.close()
    wal = copy / "docs.sqlite-wal"
    assert wal.exists()
    (copy / "docs.sqlite-shm").unlink(missing_ok=True)
    if damage == "removed":
        wal.unlink()
    else:
        wal.write_bytes(bytes(b ^ 0x5A for b in wal.read_bytes()))
    again = open_service(copy)
    assert_writes_kept(again)
    again.close()


def test_store_older_than_snapshot_is_refused_then_repaired_without_reusing_ids(index_dir, tmp_path):
    backup = tmp_path / "docs-backup.sqlite"
    shutil.copy(index_dir / "docs.sqlite", backup)  # taken before the writes below
    svc = open_service(index_dir)
    write_some(svc)
    svc.close()  # snapshots: the snapshot now holds vector ids 31 and 32
    shutil.copy(backup, index_dir / "docs.sqlite")  # the store goes back in time (same as a lost -wal)
    for suffix in ("-wal", "-shm"):
        (index_dir / f"docs.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(ServiceStateError, match="the store is older than the snapshot") as err:
        open_service(index_dir)
    assert "embedkd index --repair" in str(err.value)
    teacher = HashTeacher()
    report = repair_index(index_dir, teacher, cache_dir=index_dir.parent / "cache")
    # d3's and d5's old vectors left the snapshot with the writes: the teacher cache has them
    assert (report.documents, report.from_snapshot, report.from_teacher) == (30, 28, 2)
    assert teacher.calls == 0
    assert report.next_vid == 33  # above every id the snapshot ever held
    svc = open_service(index_dir)
    assert svc.store.get("d5") is not None and svc.store.get("new") is None  # the backup's contents
    svc.upsert([Document("later", "written after the repair")])
    assert svc.store.get("later").vid == 33  # ids 31, 32 (lost documents) are never reused
    assert top(svc, "a brand new document", 3).count("later") == 0
    svc.close()


# ------------------------------------------------------------------------- snapshot files
def test_edited_manifest_is_refused(index_dir):
    path = _manifest(index_dir)
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "applied_seq": 5}))
    with pytest.raises(ServiceStateError, match=r"manifest .* does not match its checksum .*applied_seq=5"):
        open_service(index_dir)
    path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "next_vid"}))
    with pytest.raises(ServiceStateError, match=r"manifest .* lacks key\(s\) next_vid"):
        open_service(index_dir)
    path.write_text(json.dumps({**manifest, "applied_seq": 5}))
    # the shards still match their recorded sha256: the repair salvages their vectors, no teacher needed
    assert repair_index(index_dir, teacher="no-such-model").from_snapshot == 30
    svc = open_service(index_dir)
    doc = svc.store.get("d4")
    assert top(svc, f"{doc.title} {doc.text}") == ["d4"] and svc.applied_seq == 0
    with pytest.raises(EmbedkdError, match="open for writing by a running service; stop it before a repair"):
        repair_index(index_dir)
    svc.close()
    path = _manifest(index_dir)
    path.write_text("{not json")
    with pytest.raises(ServiceStateError, match=r"manifest .* is unreadable"):
        open_service(index_dir, teacher=False)


def test_raised_applied_seq_with_a_valid_checksum_is_still_caught(index_dir):
    svc = open_service(index_dir, snapshot_every=0)
    write_some(svc)  # records 1..3, only in the write-ahead log
    crash(svc)
    path = _manifest(index_dir)
    manifest = json.loads(path.read_text())
    manifest["applied_seq"] = 2  # would hide records 1 and 2 from the index
    manifest["checksum"] = manifest_checksum(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ServiceStateError, match=r"stored document\(s\) have no vector .* e\.g\. 'new'"):
        open_service(index_dir)
    manifest["applied_seq"] = 9  # beyond anything the store issued
    manifest["checksum"] = manifest_checksum(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ServiceStateError, match="records up to 9, but the document store has only issued"):
        open_service(index_dir)
    svc.close()


def test_binary_current_is_refused_and_repair_restores_service(index_dir, capsys):
    from embedkd.cli import main

    (index_dir / "snapshots" / "CURRENT").write_bytes(b"\x00\xff\xfe\x80 not a name")
    with pytest.raises(ServiceStateError, match=r"CURRENT is corrupt \(it holds b'\\x00\\xff"):
        open_service(index_dir)
    assert (index_dir / "snapshots" / "snap-000000000000").is_dir()  # a refused start deletes nothing
    assert main(["index", "--repair", "--index-dir", str(index_dir)]) == 0
    assert "rebuilt from 30 stored document(s)" in capsys.readouterr().out
    svc = open_service(index_dir)
    doc = svc.store.get("d4")
    assert top(svc, f"{doc.title} {doc.text}") == ["d4"]
    svc.close()


def test_corrupt_shard_is_repaired_with_the_teacher(index_dir):
    svc = open_service(index_dir, snapshot_every=0)
    write_some(svc)
    svc.close()
    shard = next((index_dir / "snapshots").glob("snap-*")) / "shard-000.faiss"
    data = bytearray(shard.read_bytes())
    data[-9] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ServiceStateError, match="does not match its checksum"):
        open_service(index_dir)
    teacher = HashTeacher()
    report = repair_index(index_dir, teacher, cache_dir=index_dir.parent / "cache")
    assert report.from_teacher == 30 and teacher.calls == 0  # all from the teacher cache
    svc = open_service(index_dir)
    assert_writes_kept(svc)
    svc.close()


# ------------------------------------------------------------------------ a real server
@pytest.mark.e2e
@pytest.mark.slow  # a server subprocess loading two models: over a minute on a busy 2-core machine
def test_real_server_refuses_a_damaged_store_with_one_error_line(tmp_path, tiny_st_factory):
    from serve_helpers import Server, build_tiny_index

    teacher, student = tiny_st_factory(hidden=32, seed=0), tiny_st_factory(hidden=32, seed=1)
    idx = build_tiny_index(tmp_path, teacher, 20)
    store = idx / "docs.sqlite"
    data = bytearray(store.read_bytes())
    data[4096 : 4096 + 64] = bytes(64)  # zero the documents table's page header
    store.write_bytes(bytes(data))
    args = ["--index-dir", str(idx), "--student", student, "--teacher", teacher, "--threads", "1"]
    server = Server([*args, "--cache-dir", str(tmp_path / "cache")], tmp_path / "server.log")
    assert server.proc.wait(timeout=300) == 2
    log = server.tail()
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "docs.sqlite is corrupt" in errors[0], log
