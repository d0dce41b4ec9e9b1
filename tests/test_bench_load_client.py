"""bench/load_client.py and serve_load.load_level against a real uvicorn on loopback (a tiny ASGI app)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    if str(BENCH) not in sys.path:  # serve_load imports its sibling modules by name
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _app(scope, receive, send):
    """Echoes the JSON body under ``got``; ``/fail`` answers 422; ``/close`` asks to close the connection."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status = 422 if scope["path"] == "/fail" else 200
    out = json.dumps({"got": json.loads(body), "path": scope["path"]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
    if scope["path"] == "/close":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": out})


@pytest.fixture(scope="module")
def url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_json_connection_keeps_alive_reconnects_and_raises_on_errors(url):
    client = _load("load_client")

    async def run():
        conn = client.JSONConnection(url)
        first = json.loads(await conn.post("/search", {"query": "q", "k": 3}))
        writer = conn._writer
        second = json.loads(await conn.post("/search", {"query": "ü", "k": 1}))
        kept = conn._writer is writer  # the same connection carried both
        closed = json.loads(await conn.post("/close", [1]))
        after_close = conn._writer is None
        again = json.loads(await conn.post("/search", {}))  # reopens
        with pytest.raises(client.HTTPStatusError, match="HTTP 422"):
            await conn.post("/fail", {"x": 1})
        await conn.close()
        return first, second, kept, closed, after_close, again

    first, second, kept, closed, after_close, again = asyncio.run(run())
    assert first == {"got": {"query": "q", "k": 3}, "path": "/search"}
    assert second["got"] == {"query": "ü", "k": 1} and kept
    assert closed["got"] == [1] and after_close and again["got"] == {}
    with pytest.raises(ValueError, match="https://x"):
        client.JSONConnection("https://x")


@pytest.mark.parametrize("kind", ["asyncio", "httpx"])
def test_load_level_with_either_client(url, kind):
    serve_load = _load("serve_load")
    out = asyncio.run(serve_load.load_level(url, ["a", "b", "c"], 4, 10, 5, kind))
    assert out["n"] == 10 and out["qps"] > 0 and 0 < out["p50_ms"] <= out["p99_ms"]
    with pytest.raises(ValueError, match="unknown client 'curl'"):
        asyncio.run(serve_load.load_level(url, ["a"], 1, 1, 5, "curl"))


def test_cpu_pinning_options_parse_and_refuse_bad_values():
    serve_load = _load("serve_load")
    assert serve_load.cpu_list("0") == (0,)
    for bad in ("x", "99999", ""):
        with pytest.raises(Exception, match="CPU"):
            serve_load.cpu_list(bad)
    base = ["--index-dir", "i", "--student", "s", "--no-teacher"]
    assert serve_load.parse_args(base).server_cpus is None
    with pytest.raises(SystemExit):  # overlapping cores: argparse error naming both
        serve_load.parse_args([*base, "--server-cpus", "0", "--client-cpus", "0"])
    record = {"server_cpus": [0], "client_cpus": [1]}
    assert serve_load.pinning(record) == "server pinned to CPU 0, load client and bare timing to CPU 1"
    assert "not pinned" in serve_load.pinning({"server_cpus": None, "client_cpus": None})


def test_start_server_pins_the_server_process(monkeypatch, tmp_path):
    import os
    import subprocess

    serve_load = _load("serve_load")
    cpu = min(os.sched_getaffinity(0))
    seen = {}

    class Started(Exception):
        pass

    real_popen = subprocess.Popen

    def fake_popen(cmd, **kwargs):  # run the pinning hook in a real child to read its affinity
        child = real_popen(
            [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
            preexec_fn=kwargs["preexec_fn"], stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        seen["affinity"] = child.communicate(timeout=60)[0].strip()
        raise Started

    monkeypatch.setattr(serve_load.subprocess, "Popen", fake_popen)
    with pytest.raises(Started):
        serve_load.start_server("idx", "model", tmp_path / "log", 1, cpus=(cpu,))
    assert seen["affinity"] == str([cpu])
