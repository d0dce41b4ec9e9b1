"""Hostile requests for the fault benchmark: oversize bodies, unauthenticated teacher use, huge
searches, strings where numbers and booleans belong.

Each probe function takes a :class:`~faults_server.Prober` on a running server and returns the fault's
record (``detected`` plus details); body-size probes speak raw HTTP over a socket, so that a server
answering before the body is complete is seen as such.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterable
from typing import Any

from faults_server import API_KEY, TRACEBACK, Prober

MB = 2**20


def raw_post(
    port: int, path: str, headers: dict[str, str], chunks: Iterable[bytes], *, wait_s: float = 15.0
) -> dict[str, Any]:
    """POST ``chunks`` over a socket, stopping early if the server answers; returns what came back.

    ``chunked`` is used when ``headers`` carry no ``Content-Length``. A server that answers and closes
    mid-body may make a send fail; its answer is still read when the socket holds it.
    """
    chunked = "Content-Length" not in headers
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()] + (["Transfer-Encoding: chunked"] if chunked else [])
    out: dict[str, Any] = {"sent_bytes": 0, "answered_early": False, "status": None, "body": "", "error": ""}
    start = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
            try:
                _send(sock, head, chunks, chunked, out)
            except OSError as exc:  # reset by a server that answered and closed: read what it sent
                out["send_error"] = f"{type(exc).__name__}: {exc}"
            out.update(_read_response(sock, wait_s))
    except OSError as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def _send(sock: socket.socket, head: list[str], chunks: Iterable[bytes], chunked: bool, out: dict) -> None:
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    for chunk in chunks:
        if select.select([sock], [], [], 0)[0]:  # the server has answered already
            out["answered_early"] = True
            return
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        out["sent_bytes"] += len(chunk)
    if chunked:
        sock.sendall(b"0\r\n\r\n")


def _read_response(sock: socket.socket, wait_s: float) -> dict[str, Any]:
    sock.settimeout(wait_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        if not data:
            return {"error": f"no answer within {wait_s:.0f} s"}
    except OSError as exc:
        if not data:
            return {"error": f"{type(exc).__name__}: {exc}"}
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return {
        "status": status,
        "content_type": _header(head, "content-type"),
        "body": body[:300].decode(errors="replace"),
    }


def _header(head: bytes, name: str) -> str:
    for line in head.decode(errors="replace").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""


def _score(prober: Prober, answer: dict[str, Any]) -> None:
    """Count a raw answer's plain-text 5xx and tracebacks as the prober counts its own."""
    status, ctype = answer.get("status"), answer.get("content_type", "")
    if status is not None and status >= 500 and "json" not in ctype:
        prober.plain_text_500s += 1
    prober.tracebacks += str(answer.get("body", "")).count(TRACEBACK)


def _json_refusal(answer: dict[str, Any], status: int) -> bool:
    return answer.get("status") == status and "json" in answer.get("content_type", "")


def oversize_claimed(prober: Prober, port: int) -> dict[str, Any]:
    """Content-Length says 200 MB; only 64 KB follow. A guarded server answers 413 without waiting."""
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(200 * MB),
        "Authorization": f"Bearer {API_KEY}",
    }
    answer = raw_post(
        port, "/documents", headers, [b'{"documents": [{"id": "x", "text": "' + b"a" * 65536], wait_s=10
    )
    _score(prober, answer)
    return {"detected": _json_refusal(answer, 413), "answer": answer}


def oversize_streamed(prober: Prober, port: int) -> dict[str, Any]:
    """A real 20 MB body sent chunked (no Content-Length): the server must count and stop it (413)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    piece = 64 * 1024  # small pieces: an early answer is seen before the server has to reset
    chunks = [b'{"documents": [{"id": "big", "text": "'] + [b"a" * piece] * (20 * MB // piece) + [b'"}]}']
    answer = raw_post(port, "/documents", headers, chunks, wait_s=60)
    _score(prober, answer)
    return {"detected": _json_refusal(answer, 413), "answer": answer}


def unauthenticated_embed(prober: Prober) -> dict[str, Any]:
    """``POST /embed`` with ``role=document`` (the teacher's compute) and no API key."""
    answer = prober.request(
        "POST", "/embed", json={"texts": ["an unauthenticated document"], "role": "document"}
    )
    return {
        "detected": answer.status in (401, 403) and answer.json,
        "answer": {"status": answer.status, "body": answer.text[:200] or answer.error},
    }


def many_queries_large_k(prober: Prober) -> dict[str, Any]:
    """256 queries × k=1000, and 64 queries × k=100 with texts: both far over a sane result budget."""
    probes = {
        "256_queries_k1000": {"queries": [f"query number {i} about cells" for i in range(256)], "k": 1000},
        "64_queries_k100_include_text": {
            "queries": [f"query number {i} about genes" for i in range(64)],
            "k": 100,
            "include_text": True,
        },
    }
    answers = {}
    for name, body in probes.items():
        a = prober.request("POST", "/search", json=body, timeout=120)
        answers[name] = {
            "status": a.status,
            "seconds": round(a.seconds, 2),
            "bytes": len(a.text),
            "body": a.text[:160],
        }
    refused = all(400 <= (a["status"] or 0) < 500 for a in answers.values())
    return {"detected": refused, "answers": answers}


def strings_in_k(prober: Prober) -> dict[str, Any]:
    """``k`` and ``include_text`` given as strings: a strict API answers 422 to each."""
    probes = {
        "k='10'": {"query": "cells", "k": "10"},
        "k='ten'": {"query": "cells", "k": "ten"},
        "include_text='yes'": {"query": "cells", "include_text": "yes"},
        "include_text='maybe'": {"query": "cells", "include_text": "maybe"},
    }
    answers = {}
    for name, body in probes.items():
        a = prober.request("POST", "/search", json=body)
        answers[name] = {"status": a.status, "body": a.text[:160]}
    accepted = [n for n, a in answers.items() if a["status"] == 200]
    detected = all(a["status"] == 422 for a in answers.values())
    return {"detected": detected, "accepted": accepted, "answers": answers}


REQUEST_FAULTS = {
    "oversize_body_claimed_200mb": lambda p, port: oversize_claimed(p, port),
    "oversize_body_streamed_20mb": lambda p, port: oversize_streamed(p, port),
    "unauthenticated_embed_document": lambda p, port: unauthenticated_embed(p),
    "many_queries_large_k": lambda p, port: many_queries_large_k(p),
    "strings_in_k_include_text": lambda p, port: strings_in_k(p),
}
