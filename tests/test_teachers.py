"""Tests for embedkd.teachers: SentenceTransformer prompts, precomputed vectors, a real HTTP endpoint."""

from __future__ import annotations

import json
import re
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from embedkd.cache import TeacherCache
from embedkd.errors import EmbedkdError
from embedkd.hub import model_digest
from embedkd.teachers import (
    HTTPTeacher,
    PrecomputedTeacher,
    SentenceTransformerTeacher,
    load_teacher,
)

# --------------------------------------------------------------------------- SentenceTransformer


@pytest.fixture(scope="module")
def tiny_model(tiny_st_factory):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(tiny_st_factory(), device="cpu")


def test_st_teacher_without_prompts(tiny_model):
    teacher = SentenceTransformerTeacher(tiny_model, name="tiny")
    assert teacher.dim == 32 and teacher.id == "st:tiny@seq64"
    assert teacher.prompt("query") == teacher.prompt("document") == ""
    texts = ["a short sentence", "another one"]
    out = teacher.encode(texts, "query")
    assert out.dtype == np.float32 and out.shape == (2, 32)
    np.testing.assert_allclose(out, tiny_model.encode(texts), rtol=1e-5, atol=1e-6)
    # the whole Teacher protocol call, keywords included: same vectors whatever the batch size
    batched = teacher.encode(texts, role="query", batch_size=1, show_progress=False)
    np.testing.assert_allclose(batched, out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(teacher.encode(texts, "document"), out, rtol=1e-5, atol=1e-6)
    assert teacher.encode([], "query").shape == (0, 32)
    with pytest.raises(EmbedkdError, match="unknown role 'passage'"):
        teacher.encode(texts, "passage")


def test_st_teacher_uses_query_and_document_prompts(tiny_st_factory, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        tiny_st_factory(), device="cpu", prompts={"query": "query: ", "document": "passage: "}
    )
    model.save(str(tmp_path / "prompted"))
    teacher = SentenceTransformerTeacher(str(tmp_path / "prompted"), max_seq_length=32)
    assert teacher.prompt("query") == "query: " and teacher.prompt("document") == "passage: "
    folder = (tmp_path / "prompted").resolve()
    assert teacher.id == f"st:{folder}@seq32:w{model_digest(folder)[:10]}"  # the folder's weights in its id
    texts = ["what is a cat", "cats are small felines"]
    query, doc = teacher.encode(texts, "query"), teacher.encode(texts, "document")
    np.testing.assert_allclose(query, model.encode(["query: " + t for t in texts], prompt=""), atol=1e-5)
    np.testing.assert_allclose(doc, model.encode(["passage: " + t for t in texts], prompt=""), atol=1e-5)
    assert not np.allclose(query, doc)


def test_st_teacher_passage_prompt_and_default_prompt(tiny_st_factory):
    from sentence_transformers import SentenceTransformer

    # e5-style prompt names; the default prompt must not be applied behind the cache's back
    model = SentenceTransformer(
        tiny_st_factory(),
        device="cpu",
        prompts={"query": "query: ", "passage": "passage: ", "other": "other: "},
        default_prompt_name="other",
    )
    teacher = SentenceTransformerTeacher(model, name="e5ish")
    assert teacher.prompt("document") == "passage: "
    model.prompts["passage"] = ""
    assert teacher.prompt("document") == ""
    out = teacher.encode(["text"], "document")
    np.testing.assert_allclose(out, model.encode(["text"], prompt=""), atol=1e-5)
    assert not np.allclose(out, model.encode(["text"]))  # what the default prompt would have given


def test_st_teacher_names(tiny_model, tiny_st_factory):
    assert (
        SentenceTransformerTeacher("all-MiniLM-L6-v2").id
        == "st:sentence-transformers/all-MiniLM-L6-v2@seq256"
    )
    # an already loaded model is named after the folder it was loaded from, not a shared "model"
    loaded = SentenceTransformerTeacher(tiny_model)
    assert loaded.id.startswith(f"st:{Path(tiny_st_factory()).resolve()}@seq64:w")
    assert SentenceTransformerTeacher(tiny_st_factory()).id == loaded.id


def test_st_teacher_id_changes_when_weights_are_retrained(tiny_st_factory, tmp_path):
    import shutil

    folder = tmp_path / "teacher"
    shutil.copytree(tiny_st_factory(seed=0), folder)
    before = SentenceTransformerTeacher(str(folder)).id
    assert SentenceTransformerTeacher(str(folder)).id == before  # stable while the weights are
    shutil.rmtree(folder)
    shutil.copytree(tiny_st_factory(seed=1), folder)  # "retrained" in place: same path, new weights
    after = SentenceTransformerTeacher(str(folder)).id
    assert after != before and after.split(":w")[0] == before.split(":w")[0]


def test_st_teacher_normalize(tiny_model):
    out = SentenceTransformerTeacher(tiny_model, name="t", normalize=True).encode(["x y z"])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- precomputed


@pytest.fixture
def matrix():
    return np.arange(12, dtype=np.float64).reshape(4, 3)


def test_precomputed_txt_rows(tmp_path, matrix):
    np.save(tmp_path / "vecs.npy", matrix)
    (tmp_path / "vecs.txt").write_text("first text\nsecond  text\nthird\x0cwith form feed\nfourth\n")
    teacher = PrecomputedTeacher(tmp_path / "vecs.npy")
    assert teacher.dim == 3 and teacher.id.startswith("precomputed:")
    out = teacher.encode(["fourth", "first text", "third\x0cwith form feed"], "query")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, matrix[[3, 0, 2]])
    # texts arrive whitespace-normalised from embedkd.data
    np.testing.assert_array_equal(teacher.encode(["second text"]), matrix[[1]])


def test_precomputed_jsonl_rows(tmp_path, matrix):
    np.save(tmp_path / "v.npy", matrix)
    rows = [{"id": f"d{i}", "text": f"doc {i}"} for i in range(4)]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    teacher = load_teacher(str(tmp_path / "v.npy"), rows=tmp_path / "rows.jsonl")
    assert isinstance(teacher, PrecomputedTeacher)
    np.testing.assert_array_equal(teacher.encode(["doc 2", "doc 0"]), matrix[[2, 0]])


def test_precomputed_missing_text(tmp_path, matrix):
    np.save(tmp_path / "vecs.npy", matrix)
    (tmp_path / "vecs.txt").write_text("a\nb\nc\nd\n")
    with pytest.raises(EmbedkdError, match="1 texts have no precomputed vector, e.g. 'zzz'"):
        PrecomputedTeacher(tmp_path / "vecs.npy").encode(["a", "zzz"])


def test_precomputed_row_count_mismatch(tmp_path, matrix):
    np.save(tmp_path / "vecs.npy", matrix)
    (tmp_path / "vecs.txt").write_text("a\nb\nc\n")
    with pytest.raises(EmbedkdError, match=r"vecs\.txt has 3 rows but .*vecs\.npy has 4 vectors"):
        PrecomputedTeacher(tmp_path / "vecs.npy")


def test_precomputed_bad_files(tmp_path, matrix):
    with pytest.raises(EmbedkdError, match="does not exist"):
        PrecomputedTeacher(tmp_path / "none.npy")
    np.save(tmp_path / "vecs.npy", matrix)
    with pytest.raises(EmbedkdError, match="no rows file next to"):
        PrecomputedTeacher(tmp_path / "vecs.npy")
    (tmp_path / "vecs.jsonl").write_text('{"text": "a"}\n{"id": "b"}\n')
    with pytest.raises(EmbedkdError, match=r"vecs\.jsonl:2 must be a JSON object with a 'text' field"):
        PrecomputedTeacher(tmp_path / "vecs.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(EmbedkdError, match="not a readable .npy"):
        PrecomputedTeacher(tmp_path / "junk.npy", tmp_path / "vecs.jsonl")
    np.save(tmp_path / "flat.npy", np.zeros(4))
    with pytest.raises(EmbedkdError, match="2-d matrix"):
        PrecomputedTeacher(tmp_path / "flat.npy", tmp_path / "vecs.jsonl")


# --------------------------------------------------------------------------- HTTP


def server_vector(text: str) -> list[float]:
    return [float(len(text)), float(zlib.crc32(text.encode()) % 1000), 1.0]


class EmbeddingsServer:
    """A real OpenAI-compatible ``/v1/embeddings`` server on 127.0.0.1, scripted per test."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.failures: list[int] = []  # status codes to answer before succeeding
        self.retry_after: str | None = None
        self.mode = "ok"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers["Authorization"]}
                )
                if server.failures:
                    self._send(server.failures.pop(0), {"error": "try again"})
                elif server.mode == "short":
                    self._send(200, {"data": [{"index": 0, "embedding": [1.0, 2.0, 3.0]}]})
                elif server.mode == "garbage":
                    self._send(200, "<html>gateway</html>")
                else:
                    data = [{"index": i, "embedding": server_vector(t)} for i, t in enumerate(body["input"])]
                    self._send(200, {"object": "list", "data": data[::-1], "model": body["model"]})

            def _send(self, status, payload):
                raw = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                if server.retry_after and status == 429:
                    self.send_header("Retry-After", server.retry_after)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.requests.clear()
        self.failures.clear()
        self.retry_after, self.mode = None, "ok"


@pytest.fixture(scope="module")
def _server():
    server = EmbeddingsServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def server(_server, monkeypatch):
    _server.reset()
    monkeypatch.delenv("EMBEDKD_TEACHER_API_KEY", raising=False)
    return _server


@pytest.fixture
def sleeps(monkeypatch):
    """Record backoff delays instead of sleeping."""
    delays: list[float] = []
    monkeypatch.setattr("embedkd.external_teachers.time.sleep", delays.append)
    return delays


def test_http_batching_order_and_prefixes(server):
    teacher = HTTPTeacher(server.url, "emb-model", batch_size=4, query_prefix="q: ")
    texts = [f"text {i}" for i in range(10)]
    out = teacher.encode(texts)
    assert [len(r["body"]["input"]) for r in server.requests] == [4, 4, 2]
    assert all(r["path"] == "/v1/embeddings" and r["body"]["model"] == "emb-model" for r in server.requests)
    assert server.requests[0]["auth"] is None
    # the server answers in reverse order; rows must follow `index`
    np.testing.assert_array_equal(out, np.asarray([server_vector(t) for t in texts], np.float32))
    assert teacher.dim == 3 and len(server.requests) == 3  # learnt from the answers, no probe
    server.reset()
    query = teacher.encode(texts[:2], "query", batch_size=1)
    assert [r["body"]["input"] for r in server.requests] == [["q: text 0"], ["q: text 1"]]
    np.testing.assert_array_equal(query[0], server_vector("q: text 0"))


def test_http_dim_probe_and_dimensions_field(server):
    teacher = HTTPTeacher(server.url + "/v1", "m")
    assert teacher.url == server.url + "/v1/embeddings"
    assert teacher.dim == 3 and len(server.requests) == 1
    assert HTTPTeacher(server.url, "m", dimensions=3).dim == 3 and len(server.requests) == 1
    HTTPTeacher(server.url, "m", dimensions=3).encode(["x"])
    assert server.requests[-1]["body"]["dimensions"] == 3


def test_http_bearer_key_from_env(server, monkeypatch):
    monkeypatch.setenv("MY_EMBED_KEY", "sk-test-123")
    HTTPTeacher(server.url, "m", api_key_env="MY_EMBED_KEY").encode(["x"])
    assert server.requests[-1]["auth"] == "Bearer sk-test-123"
    monkeypatch.setenv("EMBEDKD_TEACHER_API_KEY", "default-key")
    HTTPTeacher(server.url, "m").encode(["x"])
    assert server.requests[-1]["auth"] == "Bearer default-key"


def test_http_retries_with_backoff_then_succeeds(server, sleeps):
    server.failures = [429, 500, 503]
    teacher = HTTPTeacher(server.url, "m", backoff=0.1, max_retries=3)
    out = teacher.encode(["hello"])
    np.testing.assert_array_equal(out, [server_vector("hello")])
    assert len(server.requests) == 4
    assert sleeps == [0.1, 0.2, 0.4]


def test_http_honours_retry_after(server, sleeps):
    server.failures, server.retry_after = [429], "2"
    HTTPTeacher(server.url, "m", backoff=0.1).encode(["x"])
    assert sleeps == [2.0]


def test_http_final_failure_is_one_clear_error(server, sleeps):
    server.failures = [500] * 10
    teacher = HTTPTeacher(server.url, "m", backoff=0.01, max_retries=2)
    with pytest.raises(EmbedkdError, match=r"/v1/embeddings failed after 3 attempts: HTTP 500"):
        teacher.encode(["x"])
    assert len(server.requests) == 3 and sleeps == [0.01, 0.02]


def test_http_client_error_is_not_retried(server, sleeps):
    server.failures = [401]
    with pytest.raises(EmbedkdError, match="refused the request: HTTP 401"):
        HTTPTeacher(server.url, "m").encode(["x"])
    assert len(server.requests) == 1 and sleeps == []


def test_http_connection_refused(sleeps):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EmbedkdError, match="failed after 2 attempts"):
        HTTPTeacher(f"http://127.0.0.1:{port}", "m", max_retries=1, backoff=0.01).encode(["x"])


@pytest.mark.parametrize("mode", ["short", "garbage"])
def test_http_malformed_answers(server, mode):
    server.mode = mode
    with pytest.raises(EmbedkdError, match="returned 1 embeddings|malformed embeddings response"):
        HTTPTeacher(server.url, "m").encode(["a", "b"])


def test_http_teacher_through_cache(server, tmp_path):
    teacher = HTTPTeacher(server.url, "m", batch_size=8)
    texts = [f"t{i}" for i in range(5)]
    first = TeacherCache.for_teacher(teacher, tmp_path).encode(teacher, texts + texts[:2])
    n = len(server.requests)
    second = TeacherCache.for_teacher(teacher, tmp_path).encode(teacher, texts)
    assert len(server.requests) == n  # a black box is never asked twice
    np.testing.assert_array_equal(first[:5], second)


# --------------------------------------------------------------------------- load_teacher


def test_load_teacher_spec_parsing(tiny_st_factory, tmp_path):
    t = load_teacher("http://127.0.0.1:9/v1#text-embedding-3-small", dimensions=64)
    assert isinstance(t, HTTPTeacher)
    assert (t.url, t.model, t.dim) == ("http://127.0.0.1:9/v1/embeddings", "text-embedding-3-small", 64)
    t = load_teacher("https://example.invalid", http_model="m2", dimensions=8, batch_size=3)
    assert (t.url, t.model, t.batch_size) == ("https://example.invalid/v1/embeddings", "m2", 3)
    assert load_teacher("http://h:1/v1/embeddings#x", http_model="y", dimensions=1).model == "y"
    assert load_teacher("http://h:1", dimensions=1).model == "default"

    t = load_teacher(tiny_st_factory(), max_seq_length=16, normalize=True)
    assert isinstance(t, SentenceTransformerTeacher)
    assert t.model.max_seq_length == 16 and t.normalize and re.search(r"@seq16:w[0-9a-f]{10}:norm$", t.id)

    np.save(tmp_path / "v.npy", np.ones((1, 2)))
    (tmp_path / "v.txt").write_text("only\n")
    precomputed = load_teacher(str(tmp_path / "v.npy"))
    assert isinstance(precomputed, PrecomputedTeacher)
    np.testing.assert_array_equal(precomputed.encode(["only"]), [[1.0, 1.0]])  # its rows file found

    with pytest.raises(EmbedkdError, match="no-such-org/no-such-model"):
        load_teacher("no-such-org/no-such-model")
