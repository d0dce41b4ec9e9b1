"""Request limits, keys and public answers against real ``embedkd serve`` processes on 127.0.0.1.

Server ``limited``: small limits, ``--protect-metrics``, the key from ``--api-key-file``. Server
``protected``: ``--protect-reads``, the key from ``EMBEDKD_API_KEY``. Oversize bodies are sent over raw
sockets so the test controls exactly what was sent when the answer comes.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import Server, build_tiny_index

pytestmark = pytest.mark.e2e  # real server subprocesses

KEY = "limits-key-9f"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 65_536
LIMITS = {
    "--max-k": 20,
    "--max-queries": 8,
    "--max-documents": 3,
    "--max-results": 100,
    "--max-text-results": 30,
    "--max-teacher-tokens": 100,  # the tiny teacher cuts texts at 64 tokens
    "--max-body-bytes": MAX_BODY,
}
LONG = " ".join(f"word{i}" for i in range(200))  # far over 64 tokens: costs exactly 64


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_st_factory):
    root = tmp_path_factory.mktemp("serve-limits")
    teacher, student = tiny_st_factory(hidden=32, seed=0), tiny_st_factory(hidden=32, seed=1)
    build_tiny_index(root, teacher, 40)
    return root, teacher, student


def _start(root: Path, teacher: str, student: str, name: str, extra: list[str], env: dict | None = None):
    args = ["--index-dir", str(root / "idx"), "--student", student, "--teacher", teacher]
    args += ["--cache-dir", str(root / "cache"), "--threads", "1", *extra]
    return Server(args, root / f"{name}.log", env=env).wait_ready()


@pytest.fixture(scope="module")
def limited(models):
    root, teacher, student = models
    key_file = root / "api.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    extra = [str(x) for pair in LIMITS.items() for x in pair]
    server = _start(
        root, teacher, student, "limited", [*extra, "--protect-metrics", "--api-key-file", str(key_file)]
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield server, client
    server.stop()


@pytest.fixture(scope="module")
def protected(models):
    root, teacher, student = models
    server = _start(
        root, teacher, student, "protected", ["--protect-reads", "--read-only"], env={"EMBEDKD_API_KEY": KEY}
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield server, client
    server.stop()


def _raw(port: int, head: str, chunks=(), timeout: float = 30.0) -> tuple[int, dict, float]:
    """Send ``head`` and ``chunks`` over one socket, then read the answer: (status, JSON body, seconds).

    A server that answers early may close before every chunk is sent: the rest is then dropped.
    """
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, json.loads(body[: _length(data)]), time.monotonic() - start


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def _head(path: str, extra: str = "") -> str:
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _cache_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "cache").rglob("*") if p.is_file())


def test_oversize_content_length_is_refused_before_the_body_or_the_key(limited):
    server, client = limited
    for path, key in (("/search", ""), ("/documents", "Authorization: Bearer wrong\r\n")):
        head = _head(path, f"{key}Content-Length: 200000000\r\n\r\n")
        status, body, took = _raw(server.port, head)  # no body byte is ever sent
        assert status == 413 and body["error"] == "body_too_large", body
        assert "200000000 bytes" in body["detail"] and took < 10
    assert client.get("/healthz").status_code == 200


def test_chunked_body_is_counted_and_cut_at_the_limit(limited):
    server, client = limited
    piece = b" " * 16_384
    # Sent: just over the limit, never the last chunk: an answer now proves reading stopped at the limit.
    head = _head("/search", "Transfer-Encoding: chunked\r\n\r\n")
    status, body, _ = _raw(server.port, head, [_chunk(b'{"query": "x"')] + [_chunk(piece)] * 4)
    assert status == 413 and body["error"] == "body_too_large", body
    assert f"limit of {MAX_BODY} bytes" in body["detail"]
    ok = b'{"query": "heart disease", "k": 3}'
    status, body, _ = _raw(server.port, head, [_chunk(ok[:10]), _chunk(ok[10:]), b"0\r\n\r\n"])
    assert status == 200 and len(body["results"]) == 3  # a chunked body under the limit is served
    big = client.post("/search", content=b'{"query": "' + b"x" * MAX_BODY + b'"}')
    assert big.status_code == 413 and big.json()["error"] == "body_too_large"


def test_embedding_documents_is_a_write(limited, models):
    """The teacher runs (and its cache grows) only for a caller with the key."""
    _, client = limited
    root = models[0]
    before = _cache_bytes(root)
    text = {"texts": ["an unseen text for the teacher"], "role": "document"}
    missing = client.post("/embed", json=text)
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    wrong = client.post("/embed", json=text, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and _cache_bytes(root) == before
    assert client.post("/embed", json={"texts": ["a query"]}).status_code == 200  # queries stay open
    done = client.post("/embed", json=text, headers=AUTH)
    assert done.status_code == 200 and done.json()["role"] == "document"
    assert _cache_bytes(root) > before  # the check above could fail


def test_teacher_token_budget(limited):
    _, client = limited
    one = client.post("/embed", json={"texts": [LONG], "role": "document"}, headers=AUTH)
    assert one.status_code == 200, one.text  # 64 tokens: counted as the teacher cuts, not by characters
    two = client.post("/embed", json={"texts": [LONG, LONG + " more"], "role": "document"}, headers=AUTH)
    assert two.status_code == 413 and two.json()["error"] == "teacher_budget_exceeded"
    assert "128 teacher tokens" in two.json()["detail"] and "--max-teacher-tokens" in two.json()["detail"]
    docs = [{"id": f"long-{i}", "text": LONG + f" {i}"} for i in range(2)]
    refused = client.post("/documents", json={"documents": docs}, headers=AUTH)
    assert refused.status_code == 413 and refused.json()["error"] == "teacher_budget_exceeded"
    assert client.get("/documents/long-0").status_code == 404  # nothing was written
    fits = client.post("/documents", json={"documents": docs[:1]}, headers=AUTH)
    assert fits.status_code == 200 and client.get("/documents/long-0").status_code == 200


LIMIT_CASES = [
    ("k over --max-k", "/search", {"query": "x", "k": 21}, "k_over_limit"),
    ("k over the hard cap", "/search", {"query": "x", "k": 100_000}, "k_over_limit"),
    ("queries over --max-queries", "/search", {"queries": ["q"] * 9, "k": 1}, "too_many_queries"),
    ("queries over the hard cap", "/search", {"queries": ["q"] * 257, "k": 1}, "too_many_queries"),
    ("queries x k over --max-results", "/search", {"queries": ["q"] * 6, "k": 20}, "work_budget_exceeded"),
    ("max queries x k", "/search", {"queries": ["q"] * 8, "k": 13}, "work_budget_exceeded"),
    (
        "text hits over --max-text-results",
        "/search",
        {"queries": ["q"] * 4, "k": 10, "include_text": True},
        "text_budget_exceeded",
    ),
    ("texts over --max-queries", "/embed", {"texts": ["t"] * 9}, "too_many_texts"),
    ("query too long", "/search", {"query": "x" * 10_001}, "text_too_long"),
]


@pytest.mark.parametrize("name,path,body,code", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_every_limit_has_its_own_code(limited, name, path, body, code):
    _, client = limited
    resp = client.post(path, json=body)
    assert resp.status_code == 422 and resp.json()["error"] == code, resp.text


def test_too_many_documents(limited):
    _, client = limited
    docs = [{"id": f"n{i}", "text": "short"} for i in range(4)]
    resp = client.post("/documents", json={"documents": docs}, headers=AUTH)
    assert resp.status_code == 422 and resp.json()["error"] == "too_many_documents"


def test_the_largest_allowed_combinations_are_served(limited):
    _, client = limited
    full = client.post("/search", json={"queries": [f"q {i}" for i in range(5)], "k": 20})
    assert full.status_code == 200 and [len(r) for r in full.json()["results"]] == [20] * 5
    widest = client.post("/search", json={"queries": [f"q {i}" for i in range(8)], "k": 12})
    assert widest.status_code == 200 and [len(r) for r in widest.json()["results"]] == [12] * 8
    texts = client.post("/search", json={"queries": ["a", "b", "c"], "k": 10, "include_text": True})
    assert texts.status_code == 200 and all(h["text"] for row in texts.json()["results"] for h in row)
    embed = client.post("/embed", json={"texts": [LONG] * 8})
    assert embed.status_code == 200 and len(embed.json()["embeddings"]) == 8


STRICT_CASES = [
    ("k as a string", "/search", {"query": "x", "k": "5"}),
    ("k as a float", "/search", {"query": "x", "k": 5.0}),
    ("k as a boolean", "/search", {"query": "x", "k": True}),
    ("include_text as a string", "/search", {"query": "x", "include_text": "true"}),
    ("include_text as a number", "/search", {"query": "x", "include_text": 1}),
    ("query as a number", "/search", {"query": 7}),
    ("texts as a string", "/embed", {"texts": "abc"}),
]


@pytest.mark.parametrize("name,path,body", STRICT_CASES, ids=[c[0] for c in STRICT_CASES])
def test_strict_types_are_not_coerced(limited, name, path, body):
    _, client = limited
    resp = client.post(path, json=body)
    assert resp.status_code == 422 and resp.json()["error"] == "wrong_type", resp.text
    assert resp.json()["detail"][0]["type"].endswith("_type")


def test_metrics_have_their_own_setting(limited):
    _, client = limited
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    metrics = client.get("/metrics", headers=AUTH)
    assert metrics.status_code == 200 and "embedkd_http_request_duration_seconds" in metrics.text
    assert client.get("/stats").status_code == 200  # reads are not protected on this server
    assert client.get("/openapi.json").status_code == 200


def test_key_from_file_and_no_warning(limited):
    server, client = limited
    assert client.delete("/documents/nothing-here", headers=AUTH).status_code == 404  # the key works
    wrong = client.delete("/documents/nothing-here", headers={"Authorization": f"Bearer {KEY}x"})
    assert wrong.status_code == 401
    assert "visible" not in server.tail()


def test_no_file_paths_in_public_answers(limited, models):
    _, client = limited
    root, teacher, student = models
    stats = client.get("/stats").json()
    assert stats["student"].startswith("st#") and stats["teacher"].startswith("st:st#")
    answers = [
        client.get("/stats").text,
        client.post("/embed", json={"texts": ["x"]}).text,
        client.post("/embed", json={"texts": ["x"], "role": "document"}, headers=AUTH).text,
        client.get("/openapi.json").text,
        client.post("/search", json={"query": "x", "filter": {"nope": 1}}).text,
    ]
    for text in answers:
        for path in (str(root), teacher, student, str(Path(teacher).parent)):
            assert path not in text


PROTECTED = [
    ("POST", "/search", {"json": {"query": "x", "k": 2}}),
    ("POST", "/embed", {"json": {"texts": ["x"]}}),
    ("GET", "/documents/d1", {}),
    ("GET", "/stats", {}),
    ("GET", "/docs", {}),
    ("GET", "/redoc", {}),
    ("GET", "/openapi.json", {}),
]


def test_protect_reads_covers_every_read_but_healthz(protected):
    server, client = protected
    for method, path, kwargs in PROTECTED:
        denied = client.request(method, path, **kwargs)
        assert denied.status_code == 401 and denied.json()["error"] == "unauthorized", (path, denied.text)
        allowed = client.request(method, path, headers=AUTH, **kwargs)
        assert allowed.status_code == 200, (path, allowed.text)
    health = client.get("/healthz")
    assert health.status_code == 200 and set(health.json()) == {"status", "documents"}
    assert client.get("/metrics").status_code == 200  # its own setting (--protect-metrics), off here
    assert "paths" in client.get("/openapi.json", headers=AUTH).json()  # the key from EMBEDKD_API_KEY
