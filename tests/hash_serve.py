"""A real ``embedkd serve`` process over the hash models: the whole CLI, settings and uvicorn, started in
seconds because no transformer is loaded.

Run as a script, it is ``embedkd serve <args>`` with :class:`~serve_helpers.HashEncoder` and
:class:`~serve_helpers.HashTeacher` loaded in place of the models its ``--student`` / ``--teacher`` name;
:class:`HashServer` starts it on a free loopback port like :class:`~serve_helpers.Server` starts the real
one. :func:`mount_tmpfs` mounts a small real filesystem, or skips the test saying why it cannot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from serve_helpers import REPO, Server, free_port

HERE = Path(__file__).resolve().parent


class HashServer(Server):
    """``python tests/hash_serve.py <embedkd serve args>`` on 127.0.0.1:<free port>, output in ``log``."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:  # noqa: D107
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        path = os.pathsep.join([str(REPO), str(HERE)])
        full_env = {**os.environ, "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        cmd = [sys.executable, str(Path(__file__).resolve()), *args]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]  # no --threads: it would import torch
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT
        )


def mount_tmpfs(mnt: Path, options: str) -> None:
    """Mount a tmpfs with ``options`` (e.g. ``size=4m``) at ``mnt``; skip the test where that is refused."""
    mnt.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("no mount command here: cannot make a small real filesystem")
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not permitted'}); needs CAP_SYS_ADMIN"
        )


def unmount(mnt: Path) -> None:
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(folder: Path) -> None:
    """Write zeros into ``folder/filler`` until its filesystem is full (ENOSPC)."""
    with (folder / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == 28


def _main(argv: list[str]) -> int:
    from serve_helpers import HashEncoder, HashTeacher

    import serve.encoders

    # Replaced before the service modules import them by name, so every caller gets the hash models.
    serve.encoders.load_query_encoder = lambda *_a, **_k: HashEncoder()
    serve.encoders.load_index_teacher = lambda *_a, **_k: HashTeacher()
    from embedkd.cli import main

    return main(["serve", *argv])


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
