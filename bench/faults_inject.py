"""Faults injected into a copy of an index folder (``embedkd index`` layout), one function each.

Each injector takes the index folder and returns a short note of what it did (sizes, offsets). The
folder is a fresh copy made for that fault alone, holding acknowledged writes that a ``kill -9`` left
in SQLite's ``docs.sqlite-wal`` file (see ``bench/faults.py``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

DOCS = "docs.sqlite"


def _current_manifest(index_dir: Path) -> Path:
    name = (index_dir / "snapshots" / "CURRENT").read_text().strip()
    return index_dir / "snapshots" / name / "manifest.json"


def _sidecars(index_dir: Path) -> list[Path]:
    return [index_dir / f"{DOCS}-wal", index_dir / f"{DOCS}-shm"]


def _checkpoint(index_dir: Path) -> None:
    """Move SQLite's WAL into the main file, so that damage to the main file is what reads see."""
    conn = sqlite3.connect(index_dir / DOCS)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _wal_holds(index_dir: Path) -> str:
    """How many ``docs`` rows the main file alone holds against main file plus ``-wal`` (copies are read)."""
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for with_wal in (False, True):
            target = Path(tmp) / f"w{int(with_wal)}"
            target.mkdir()
            shutil.copy2(index_dir / DOCS, target / DOCS)
            if with_wal and (index_dir / f"{DOCS}-wal").exists():
                shutil.copy2(index_dir / f"{DOCS}-wal", target / f"{DOCS}-wal")
            conn = sqlite3.connect(target / DOCS)
            try:
                counts.append(conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])
            finally:
                conn.close()
    return f"docs rows: {counts[0]} in docs.sqlite alone, {counts[1]} with its -wal"


def docs_emptied(index_dir: Path) -> str:
    conn = sqlite3.connect(index_dir / DOCS)
    try:
        n_docs = conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        n_wal = conn.execute("SELECT COUNT(*) FROM wal").fetchone()[0]
        conn.execute("DELETE FROM docs")
        conn.execute("DELETE FROM wal")
        conn.commit()
    finally:
        conn.close()
    return f"deleted every row of docs ({n_docs}) and wal ({n_wal})"


def docs_removed(index_dir: Path) -> str:
    removed = [p.name for p in [index_dir / DOCS, *_sidecars(index_dir)] if p.exists()]
    for name in removed:
        (index_dir / name).unlink()
    return f"removed {', '.join(removed)}"


def wal_removed(index_dir: Path) -> str:
    wal = index_dir / f"{DOCS}-wal"
    size = wal.stat().st_size if wal.exists() else 0
    holds = _wal_holds(index_dir)
    for path in _sidecars(index_dir):
        path.unlink(missing_ok=True)
    return (
        f"removed {DOCS}-wal ({size} bytes, left by kill -9 after the acknowledged writes) and -shm; {holds}"
    )


def wal_garbled(index_dir: Path) -> str:
    wal = index_dir / f"{DOCS}-wal"
    size = wal.stat().st_size if wal.exists() else 0
    if size <= 32:
        return f"{DOCS}-wal holds {size} bytes: nothing to garble (the writes were checkpointed)"
    holds = _wal_holds(index_dir)
    rng = random.Random(0)
    with wal.open("r+b") as f:
        f.seek(32)  # the first frame, just past the WAL header: every later frame chains its checksum
        f.write(bytes(rng.randrange(256) for _ in range(min(512, size - 32))))
    (index_dir / f"{DOCS}-shm").unlink(missing_ok=True)
    return f"overwrote 512 bytes of {DOCS}-wal ({size} bytes) at offset 32 with random bytes; {holds}"


def applied_seq_raised(index_dir: Path) -> str:
    path = _current_manifest(index_dir)
    manifest = json.loads(path.read_text())
    old = manifest["applied_seq"]
    manifest["applied_seq"] = old + 1000
    path.write_text(json.dumps(manifest, indent=2))
    return f"{path.relative_to(index_dir)}: applied_seq {old} -> {old + 1000}"


def manifest_keys_removed(index_dir: Path) -> str:
    path = _current_manifest(index_dir)
    manifest = json.loads(path.read_text())
    dropped = [k for k in ("applied_seq", "files") if k in manifest]
    path.write_text(json.dumps({k: v for k, v in manifest.items() if k not in dropped}))
    return f"{path.relative_to(index_dir)}: removed keys {', '.join(dropped)}"


def current_binary(index_dir: Path) -> str:
    (index_dir / "snapshots" / "CURRENT").write_bytes(b"\xff\xfe\x00\x9c" + os.urandom(28))
    return "snapshots/CURRENT overwritten with 32 binary bytes"


def docs_truncated(index_dir: Path) -> str:
    _checkpoint(index_dir)
    path = index_dir / DOCS
    size = path.stat().st_size
    os.truncate(path, size // 2)
    return f"checkpointed, then truncated {DOCS} from {size} to {size // 2} bytes"


def docs_page_corrupt(index_dir: Path) -> str:
    _checkpoint(index_dir)
    path = index_dir / DOCS
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big") or 65536
    pages = len(data) // page
    targets = sorted({max(1, pages * q // 4) for q in (1, 2, 3)})  # page 0 (the schema) stays readable
    rng = random.Random(1)
    with path.open("r+b") as f:
        for p in targets:
            f.seek(p * page)
            f.write(bytes(rng.randrange(256) for _ in range(page)))
    return f"checkpointed, then overwrote pages {targets} of {pages} ({page} bytes each) with random bytes"


def make_read_only(index_dir: Path, mount_point: Path) -> tuple[Path, str]:
    """``chmod -R a-w`` the folder; as root (whom permissions do not stop) also a read-only bind mount.

    Returns the folder to serve and a note. Undo with :func:`undo_read_only`.
    """
    for root, _dirs, files in os.walk(index_dir):
        for name in files:
            os.chmod(Path(root) / name, 0o444)
        os.chmod(root, 0o555)
    if os.geteuid() != 0:
        return index_dir, "chmod -R a-w (not root: permissions apply)"
    mount_point.mkdir(parents=True, exist_ok=True)
    undo_read_only(Path("/nonexistent"), mount_point)  # a bind mount a killed run left behind
    try:
        subprocess.run(["mount", "--bind", str(index_dir), str(mount_point)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mount_point)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = getattr(exc, "stderr", b"") or str(exc)
        return (
            index_dir,
            f"chmod -R a-w, but running as root makes it ineffective (read-only bind mount failed: {reason!r})",
        )
    return (
        mount_point,
        "chmod -R a-w is ineffective for root, so the folder is served from a read-only bind mount",
    )


def undo_read_only(index_dir: Path, mount_point: Path) -> None:
    # os.path.ismount misses a bind mount of the same filesystem: look in the mount table
    if str(mount_point) in Path("/proc/self/mounts").read_text():
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)
    for root, _dirs, files in os.walk(index_dir):  # nothing to walk for a missing folder
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(Path(root) / name, 0o644)


STATE_FAULTS: dict[str, Callable[[Path], str]] = {
    "docs_emptied": docs_emptied,
    "docs_removed": docs_removed,
    "wal_removed_after_kill9": wal_removed,
    "wal_garbled": wal_garbled,
    "manifest_applied_seq_raised": applied_seq_raised,
    "manifest_keys_removed": manifest_keys_removed,
    "current_binary": current_binary,
    "docs_truncated": docs_truncated,
    "docs_page_corrupted": docs_page_corrupt,
}
