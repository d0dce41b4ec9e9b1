"""The fault runs that need more than "inject, start, probe": a read-only folder, a full disk, and
``kill -9`` in the middle of writes. Each returns the fault's record (see ``bench/faults.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from faults_inject import make_read_only, undo_read_only
from faults_server import Prober

logger = logging.getLogger("bench.faults")


def read_only_folder(ctx) -> dict[str, Any]:
    """The index folder is not writable; a writable service must refuse to start or refuse writes clearly."""
    folder = ctx.fresh_copy("read_only_folder")
    mount_point = ctx.work / "ro-mount"
    served, note = make_read_only(folder, mount_point)
    try:
        srv = ctx.server(served)
        try:
            start = srv.wait()
            rec = ctx.record(start, note)
            if start.up:
                prober = Prober(srv.url)
                rec.update(ctx.probe_state(prober))
                write = prober.upsert([ctx.new_doc("ro-write", offset=6)])
                rec["probes"]["write"] = {"status": write.status, "body": write.text[:200] or write.error}
                rec["detected"] = rec["detected"] or write.json_error
                ctx.score(rec, prober)
        finally:
            srv.stop()
        rec["tracebacks"] += srv.tracebacks()
        return rec
    finally:
        undo_read_only(folder, mount_point)


def disk_full(ctx) -> dict[str, Any]:
    """The index on a small tmpfs that fills up during writes; then a restart with the space freed."""
    mnt = ctx.work / "tmpfs"
    mnt.mkdir(parents=True, exist_ok=True)
    size_kb = 2 * _du_kb(ctx.prepared) + 4096
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip() or str(exc)
        return ctx.skipped(f"mount -t tmpfs is not permitted here: {reason}")
    try:
        return _disk_full_run(ctx, mnt, size_kb)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def _disk_full_run(ctx, mnt: Path, size_kb: int) -> dict[str, Any]:
    folder = mnt / "idx"
    shutil.copytree(ctx.prepared, folder)
    srv = ctx.server(folder)
    try:
        start = srv.wait()
        rec = ctx.record(start, f"index on a {size_kb} KB tmpfs, filled to 256 KB free while writing")
        if not start.up:
            return rec
        filled = _fill(mnt / "filler.bin", keep_free=256 * 1024)
        prober = Prober(srv.url)
        acked, failures = [], []
        for i in range(40):
            doc = ctx.new_doc(f"full-{i}", offset=120 + i, repeat=12)
            answer = prober.upsert([doc])
            if answer.status == 200:
                acked.append(doc)
            else:
                failures.append(
                    {"status": answer.status, "json": answer.json, "body": answer.text[:200] or answer.error}
                )
                if len(failures) >= 3:
                    break
        search = prober.search(ctx.expect.kept[0]["title"])
        rec["probes"] = {"filled_bytes": filled, "acked_writes": len(acked), "failed_writes": failures[:3]}
        rec["probes"]["search_on_full_disk"] = search.status
        ctx.score(rec, prober)
    finally:
        srv.kill9()
    rec["tracebacks"] += srv.tracebacks()
    (mnt / "filler.bin").unlink(missing_ok=True)
    _restart_and_count(ctx, folder, acked, rec)
    clear = bool(failures) and all(f["json"] for f in failures)
    rec["detected"] = clear and rec["probes"].get("restart_up", False)
    if not failures:
        rec["note"] = "the disk never filled up: every write was acknowledged"
    return rec


def _fill(path: Path, keep_free: int) -> int:
    """Write zeros to ``path`` until only ``keep_free`` bytes are left on its filesystem."""
    st = os.statvfs(path.parent)
    todo = max(0, st.f_bavail * st.f_frsize - keep_free)
    written = 0
    try:
        with path.open("wb") as f:
            while written < todo:
                written += f.write(b"\0" * min(1 << 20, todo - written))
    except OSError:
        pass
    return written


def _du_kb(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) // 1024 + 1


def _restart_and_count(ctx, folder: Path, acked: list[dict], rec: dict[str, Any]) -> None:
    """Restart on ``folder``; count acknowledged documents that are gone or not found by search."""
    srv = ctx.server(folder)
    try:
        start = srv.wait()
        rec["probes"]["restart_up"] = start.up
        rec["probes"]["restart"] = start.to_dict()
        if start.up:
            prober = Prober(srv.url)
            lost = [d["id"] for d in acked if prober.get(d["id"]).status != 200]
            missed = [
                d["id"]
                for d in acked[:12]
                if d["id"] not in (prober.hit_ids(prober.search(ctx.query_of(d))) or [])
            ]
            rec["acknowledged_lost"] += len(lost)
            rec["wrong_results"] += len(missed)
            rec["probes"]["lost_ids"], rec["probes"]["missed_ids"] = lost[:10], missed[:10]
            ctx.score(rec, prober)
    finally:
        srv.stop()
    rec["tracebacks"] += srv.tracebacks()


def kill9_during_writes(ctx) -> dict[str, Any]:
    """Two writers upsert one document per request; ``kill -9`` lands mid-stream; the restart must hold
    every acknowledged document. ``detected`` only if the restart refuses with one error line: a crash
    has nothing to report, what counts is ``acknowledged_lost``."""
    folder = ctx.fresh_copy("kill9_during_writes")
    srv = ctx.server(folder)
    acked: list[dict] = []
    try:
        start = srv.wait()
        rec = ctx.record(start, "kill -9 while two clients upsert; restart; every acknowledged write checked")
        if not start.up:
            return rec
        prober = Prober(srv.url, timeout=30)
        stop = threading.Event()
        lock = threading.Lock()

        def writer(t: int) -> None:
            n = 0
            while not stop.is_set():
                doc = ctx.new_doc(f"kw-{t}-{n}", offset=10 + t * 55 + n)
                if prober.upsert([doc], timeout=30).status == 200:
                    with lock:
                        acked.append(doc)
                n += 1

        threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 16 and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=40)
        rec["probes"] = {"acked_before_kill": len(acked)}
        ctx.score(rec, prober, count_errors=False)
    finally:
        srv.kill9()
    rec["tracebacks"] += srv.tracebacks()
    _restart_and_count(ctx, folder, list(acked), rec)
    return rec
