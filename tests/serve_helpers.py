"""Helpers for the serve tests: a real ``embedkd serve`` subprocess on a free loopback port, and corpora."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from serve.encoders import QueryEncoder

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_tiny_index(tmp_path: Path, teacher_path: str, n: int) -> Path:
    """``tmp_path/idx``: ``n`` documents of :func:`write_corpus` embedded by a SentenceTransformer teacher."""
    from embedkd.teachers import SentenceTransformerTeacher
    from serve.builder import build_index

    build_index(
        write_corpus(tmp_path / "corpus.jsonl", n),
        SentenceTransformerTeacher(teacher_path),
        tmp_path / "idx",
        teacher_name=teacher_path,
        cache_dir=tmp_path / "cache",
        show_progress=False,
    )
    return tmp_path / "idx"


def write_corpus(path: Path, n: int, groups: int = 3) -> Path:
    """A small BEIR-style jsonl corpus with ``group`` metadata."""
    topics = ["protein folding", "heart disease", "gene expression", "vaccine trials", "brain imaging"]
    with path.open("w") as f:
        for i in range(n):
            row = {
                "_id": f"d{i}",
                "title": f"Study {i} on {topics[i % len(topics)]}",
                "text": f"Document {i} reports results about {topics[(i * 7) % len(topics)]} in cohort {i * 13}.",
                "metadata": {"group": f"g{i % groups}", "n": i},
            }
            f.write(json.dumps(row) + "\n")
    return path


class Server:
    """``python -m embedkd serve ...`` on 127.0.0.1:<free port>, its output in ``log``."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        cmd = [
            sys.executable,
            "-m",
            "embedkd",
            "serve",
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 600.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.kill9()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log_file.close()

    def stop(self) -> int:
        """Graceful stop (SIGTERM: the service snapshots pending writes)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill9()
        if not self._log_file.closed:
            self._log_file.close()
        return self.proc.returncode


DIM = 16


def _vec(text: str) -> np.ndarray:
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


class HashTeacher:
    """Deterministic teacher: a text's vector is seeded by its hash."""

    id, dim, name = "hash-teacher", DIM, "hash-teacher"

    def __init__(self) -> None:
        self.calls = 0

    def prompt(self, role: str) -> str:
        return ""

    def encode(self, texts, role="document", *, batch_size=32, show_progress=False):
        self.calls += len(texts)
        return np.stack([_vec(t) for t in texts])


class HashEncoder(QueryEncoder):
    """Query encoder in the same hashed space (a query equal to a document's text finds it)."""

    def __init__(self) -> None:
        self.id = self.name = "hash-student"
        self.dim, self.max_seq_length = DIM, 8

    def encode(self, texts, role="query", *, batch_size=None, show_progress=None):
        return np.stack([_vec(t) for t in texts])

    def truncated(self, texts):
        return [len(t.split()) > 8 for t in texts]
