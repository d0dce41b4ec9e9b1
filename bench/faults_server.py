"""A real ``embedkd serve`` process for the fault benchmark, and an HTTP client that keeps score.

:class:`ServeProcess` starts ``python -m embedkd serve`` on a free 127.0.0.1 port with its output in a
log file, waits until it answers (or exits), and is always stopped: ``stop`` (SIGTERM) or ``kill9``.
:class:`Prober` sends requests with timeouts, never raises, and counts what the fault benchmark
records: plain-text (non-JSON) 5xx answers and tracebacks in response bodies.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paths import REPO

logger = logging.getLogger("bench.faults")
TRACEBACK = "Traceback (most recent call last)"
API_KEY = "fault-bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class StartOutcome:
    """How a start went: ``up`` (answering HTTP), or exited with ``returncode`` and its log lines."""

    up: bool
    returncode: int | None = None
    error_lines: list[str] = field(default_factory=list)
    last_line: str = ""
    tracebacks: int = 0
    seconds: float = 0.0
    hung: str = ""  # set when the process printed its error but did not exit (then killed)

    @property
    def refused_cleanly(self) -> bool:
        """Exited by itself, non-zero, with exactly one ``error:`` line and no traceback."""
        return (
            not self.up
            and not self.hung
            and (self.returncode or 0) > 0
            and len(self.error_lines) == 1
            and self.tracebacks == 0
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "returncode": self.returncode,
            "error_line": self.error_lines[0] if len(self.error_lines) == 1 else self.error_lines[:3],
            **({} if self.up else {"last_line": self.last_line[:300]}),
            **({"hung_after_error": self.hung} if self.hung else {}),
            "seconds": round(self.seconds, 1),
        }


class ServeProcess:
    """``python -m embedkd -q serve`` over ``index_dir`` (student and teacher both ``model``), writes keyed.

    Args:
        index_dir: the index folder.
        model: the student and teacher model folder.
        log: file that receives the server's stdout and stderr.
        cache_dir: teacher cache root.
        extra: more ``embedkd serve`` options.
    """

    def __init__(
        self,
        index_dir: Path,
        model: str,
        log: Path,
        cache_dir: Path,
        *,
        extra: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "embedkd", "-q", "serve", "--index-dir", str(index_dir)]
        cmd += ["--student", model, "--teacher", model, "--cache-dir", str(cache_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--threads", "1", *(extra or [])]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "EMBEDKD_API_KEY": API_KEY,
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
        }
        self._start_offset = log.stat().st_size if log.exists() else 0
        self._out = log.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 240.0, exit_grace: float = 30.0) -> StartOutcome:
        """Until the server answers any HTTP request, exits, or ``timeout`` passes (then it is killed).

        A server that printed an ``error:`` line but is still running ``exit_grace`` seconds later is
        killed and reported as hung (its state is dumped from ``/proc`` first).
        """
        import httpx

        start, errored = time.monotonic(), None
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                return self._outcome(False, time.monotonic() - start)
            try:
                httpx.get(self.url + "/healthz", timeout=2)
                return self._outcome(True, time.monotonic() - start)
            except httpx.HTTPError:
                time.sleep(0.3)
            if errored is None and "\nerror:" in "\n" + self.text():
                errored = time.monotonic()
            if errored is not None and time.monotonic() - errored > exit_grace:
                hung = f"still running {exit_grace:.0f} s after its error line ({self._proc_state()})"
                self.kill9()
                return self._outcome(False, time.monotonic() - start, hung)
        self.kill9()
        return self._outcome(False, time.monotonic() - start)

    def _proc_state(self) -> str:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
            wchan = Path(f"/proc/{self.proc.pid}/wchan").read_text()
        except OSError as exc:
            return f"no /proc state: {exc}"
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        return f"state {fields.get('State', '?').strip()}, threads {fields.get('Threads', '?').strip()}, wchan {wchan}"

    def _outcome(self, up: bool, seconds: float, hung: str = "") -> StartOutcome:
        text = self.text()
        lines = [line for line in text.splitlines() if line.strip()]
        return StartOutcome(
            up=up,
            returncode=self.proc.returncode,
            error_lines=[line for line in lines if line.startswith("error:")],
            last_line=lines[-1] if lines else "",
            tracebacks=text.count(TRACEBACK),
            seconds=seconds,
            hung=hung,
        )

    def text(self) -> str:
        """What the server wrote since this process started."""
        if not self._out.closed:
            self._out.flush()
        with self.log.open("rb") as f:
            f.seek(self._start_offset)
            return f.read().decode(errors="replace")

    def tracebacks(self) -> int:
        return self.text().count(TRACEBACK)

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()

    def stop(self) -> None:
        """SIGTERM (the service snapshots pending writes), SIGKILL after 60 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()


@dataclass
class Answer:
    """One HTTP exchange: ``status`` None when no answer came (``error`` says why)."""

    status: int | None
    body: Any = None
    text: str = ""
    json: bool = False
    error: str = ""
    seconds: float = 0.0

    @property
    def json_error(self) -> bool:
        return self.status is not None and self.status >= 400 and self.json


class Prober:
    """HTTP requests to one server that never raise; counts plain-text 5xx answers and tracebacks."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url, self.timeout = url, timeout
        self.plain_text_500s = 0
        self.tracebacks = 0
        self.log: list[dict[str, Any]] = []

    def request(self, method: str, path: str, *, key: bool = False, **kwargs: Any) -> Answer:
        import httpx

        headers = dict(kwargs.pop("headers", {}) or {})
        if key:
            headers["Authorization"] = f"Bearer {API_KEY}"
        start = time.perf_counter()
        try:
            resp = httpx.request(
                method,
                self.url + path,
                headers=headers,
                timeout=kwargs.pop("timeout", self.timeout),
                **kwargs,
            )
        except Exception as exc:  # noqa: BLE001 - a probe records any failure and goes on
            answer = Answer(None, error=f"{type(exc).__name__}: {exc}"[:300])
        else:
            answer = self._answer(resp.status_code, resp.headers.get("content-type", ""), resp.text)
        answer.seconds = time.perf_counter() - start
        self.log.append(
            {
                "request": f"{method} {path}",
                "status": answer.status,
                "body": answer.text[:200] or answer.error,
            }
        )
        return answer

    def _answer(self, status: int, content_type: str, text: str) -> Answer:
        try:
            body, is_json = json.loads(text), "json" in content_type
        except ValueError:
            body, is_json = None, False
        if status >= 500 and not is_json:
            self.plain_text_500s += 1
        self.tracebacks += text.count(TRACEBACK)
        return Answer(status, body, text, is_json)

    def search(self, query: str, k: int = 10) -> Answer:
        return self.request("POST", "/search", json={"query": query, "k": k})

    def hit_ids(self, answer: Answer) -> list[str] | None:
        """The ids of a single-query search answer (None when it is not a 200 with results)."""
        if answer.status != 200 or not isinstance(answer.body, dict):
            return None
        return [h.get("id") for h in answer.body.get("results", []) if isinstance(h, dict)]

    def upsert(self, docs: list[dict[str, Any]], timeout: float | None = None) -> Answer:
        return self.request("POST", "/documents", key=True, json={"documents": docs}, timeout=timeout or 120)

    def delete(self, doc_id: str) -> Answer:
        return self.request("DELETE", f"/documents/{doc_id}", key=True)

    def get(self, doc_id: str) -> Answer:
        return self.request("GET", f"/documents/{doc_id}")
