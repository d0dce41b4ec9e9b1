"""Error answers, public names, limit helpers and key settings, in-process (TestClient, no server)."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient
from serve_helpers import HashEncoder, HashTeacher, write_corpus

from embedkd.cli import main
from serve.app import create_app
from serve.builder import build_index
from serve.errors import LimitError, ServiceStateError, StorageFullError, StorageIOError
from serve.handlers import validation_code
from serve.limits import TeacherTokenCounter, check_results
from serve.public import public_model_name, redact_all, redact_paths
from serve.service import SearchService, ServiceOptions
from serve.settings import ServeSettings

AUTH = {"Authorization": "Bearer k"}


@pytest.fixture
def app_client(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 12)
    build_index(corpus, HashTeacher(), tmp_path / "idx", cache_dir=tmp_path / "cache", show_progress=False)
    cfg = ServeSettings(index_dir=tmp_path / "idx", student="hash", api_key="k")
    svc = SearchService.open(
        tmp_path / "idx", HashEncoder(), HashTeacher(), ServiceOptions(cache_dir=str(tmp_path / "cache"))
    )
    with TestClient(create_app(cfg, svc)) as client:
        yield client, svc


SERVICE_ERRORS = [
    (StorageFullError("disk full writing /srv/idx/docs.sqlite"), 507, "disk_full"),
    (StorageIOError("fsync failed on /srv/idx/docs.sqlite"), 503, "io_error"),
    (ServiceStateError("/srv/idx: snapshot and log disagree"), 500, "state_corrupt"),
    (LimitError("too much at /srv/idx", "some_limit", 429), 429, "some_limit"),
]


@pytest.mark.parametrize("exc,status,code", SERVICE_ERRORS, ids=[e[2] for e in SERVICE_ERRORS])
def test_service_errors_answer_with_their_status_and_code(app_client, exc, status, code):
    client, svc = app_client

    def fail(*_args, **_kwargs):
        raise exc

    svc.upsert = fail
    resp = client.post("/documents", json={"documents": [{"id": "a", "text": "b"}]}, headers=AUTH)
    assert resp.status_code == status and resp.json()["error"] == code
    assert "/srv/idx" not in resp.text and re.search(r"\w#[0-9a-f]{8}", resp.json()["detail"])


def test_an_unexpected_error_is_a_json_500_without_traceback(app_client, caplog):
    client, svc = app_client

    def crash(*_args, **_kwargs):
        raise RuntimeError("boom in /very/secret/place.py")

    svc.embed_documents = crash
    with caplog.at_level(logging.ERROR, logger="serve.handlers"):
        resp = client.post("/embed", json={"texts": ["x"], "role": "document"}, headers=AUTH)
    assert resp.status_code == 500 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {"detail": "internal error; see the service log", "error": "internal_error"}
    assert "Traceback" in caplog.text and "boom in /very/secret/place.py" in caplog.text  # logged
    assert 'status="500"' in client.get("/metrics").text  # and counted
    assert client.get("/healthz").status_code == 200


def test_other_http_errors_have_codes(app_client):
    client, _ = app_client
    assert client.put("/search").json()["error"] == "method_not_allowed"
    assert client.get("/nowhere").json()["error"] == "not_found"


@pytest.mark.parametrize(
    "errors,code",
    [
        ([{"type": "int_type", "loc": ("body", "k")}], "wrong_type"),
        ([{"type": "less_than_equal", "loc": ("body", "k")}], "k_over_limit"),
        ([{"type": "greater_than_equal", "loc": ("body", "k")}], "invalid_request"),
        ([{"type": "too_long", "loc": ("body", "documents")}], "too_many_documents"),
        ([{"type": "string_too_long", "loc": ("body", "queries", 3)}], "text_too_long"),
        ([{"type": "json_invalid", "loc": ("body", 4)}], "malformed_json"),
        ([{"type": "extra_forbidden", "loc": ("body", "colour")}], "unknown_field"),
        ([], "invalid_request"),
    ],
)
def test_validation_codes(errors, code):
    assert validation_code(errors) == code


def test_public_names_hide_file_paths(tmp_path):
    folder = tmp_path / "models" / "leaf-v2"
    folder.mkdir(parents=True)
    shown = public_model_name(str(folder))
    assert shown.startswith("leaf-v2#") and len(shown) == len("leaf-v2#") + 8 and str(tmp_path) not in shown
    assert public_model_name(str(tmp_path / "models" / "other" / "leaf-v2")) != shown  # one name, two folders
    assert (
        public_model_name("sentence-transformers/all-MiniLM-L6-v2")
        == "sentence-transformers/all-MiniLM-L6-v2"
    )
    teacher_id = f"st:{folder}@seq256:wabc123:norm"
    assert redact_paths(teacher_id) == f"st:{shown}@seq256:wabc123:norm"
    url = "openai:http://127.0.0.1:8000/v1/embeddings#m"
    assert redact_paths(url) == url
    nested = redact_all({"uri": "/data/milvus.db", "rows": [f"at {folder}", 3], "on": True})
    assert nested == {"uri": redact_paths("/data/milvus.db"), "rows": [f"at {shown}", 3], "on": True}
    assert nested["uri"].startswith("milvus.db#")


def test_result_budget_message_names_the_setting():
    check_results(5, 20, False, 100, 30)  # at the budget: fine
    with pytest.raises(
        LimitError, match=r"6 queries x k=20 = 120 results .* budget of 100 \(--max-results\)"
    ):
        check_results(6, 20, False, 100, 30)
    with pytest.raises(LimitError) as info:
        check_results(1, 31, True, 100, 30)
    assert info.value.code == "text_budget_exceeded" and info.value.status == 422


def test_teacher_tokens_are_counted_as_the_teacher_cuts(minilm_path):
    from embedkd.teachers import SentenceTransformerTeacher

    teacher = SentenceTransformerTeacher(minilm_path, max_seq_length=32)
    counter = TeacherTokenCounter(teacher)
    assert counter.exact and counter.max_tokens == 32
    words = " ".join(f"w{i}" for i in range(500))
    assert counter.count(["hello world", words, "x" * 100_000]) == [4, 32, 32]
    assert counter.check(["hello world"] * 8, 32) == 32
    with pytest.raises(LimitError) as info:
        counter.check(["hello world"] * 9, 32)
    assert info.value.code == "teacher_budget_exceeded" and info.value.status == 413
    estimated = TeacherTokenCounter(HashTeacher())  # no tokenizer: characters / 4
    assert not estimated.exact and estimated.count(["abcdefghi", "a"]) == [3, 1]


def _serve_error(argv, capsys, monkeypatch) -> str:
    monkeypatch.delenv("EMBEDKD_API_KEY", raising=False)
    assert main(["serve", *argv]) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_key_settings_are_checked_at_start(tmp_path, capsys, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    base = ["--index-dir", str(tmp_path), "--student", "s"]
    assert "not both" in _serve_error(
        [*base, "--api-key", "a", "--api-key-file", str(key_file)], capsys, monkeypatch
    )
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert "is empty" in _serve_error([*base, "--api-key-file", str(empty)], capsys, monkeypatch)
    assert "--protect-reads needs an API key" in _serve_error([*base, "--protect-reads"], capsys, monkeypatch)
    assert "--protect-metrics needs an API key" in _serve_error(
        [*base, "--protect-metrics"], capsys, monkeypatch
    )
    msg = _serve_error([*base, "--max-k", "50", "--max-results", "20"], capsys, monkeypatch)
    assert msg == "error: --max-results 20 is below --max-k 50: one query at the largest k would be refused"
    key_file.chmod(0o600)
    assert ServeSettings(
        index_dir=tmp_path, student="s", api_key_file=key_file
    ).api_key.get_secret_value() == ("from-file")


def test_a_key_on_the_command_line_is_warned_about(tmp_path, capsys, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="serve.cli_serve"):
        _serve_error(
            ["--index-dir", str(tmp_path / "missing"), "--student", "s", "--api-key", "k"],
            capsys,
            monkeypatch,
        )
    assert "--api-key is visible to every user of this machine" in caplog.text
