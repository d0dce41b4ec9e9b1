"""Hot swap of the query student (serve.swap) and the admin endpoints' keys.

Unit tests: where a student may load from, safetensors only, the watcher's marker rule, a batch in
flight finishing on the old student. The e2e test swaps students in a real ``embedkd serve`` under a
stream of concurrent queries (no request may fail; p99 during the swap is recorded against before),
refuses bad students, follows a watched folder, and checks every ``/admin`` endpoint's key.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import HashEncoder, HashTeacher, Server, write_corpus

from embedkd.errors import EmbedkdError
from embedkd.teachers import SentenceTransformerTeacher
from serve.app import create_app
from serve.builder import build_index
from serve.service import SearchService, ServiceOptions
from serve.settings import ServeSettings
from serve.swap import (
    READY_MARKER,
    StudentNotFoundError,
    StudentWatcher,
    SwapBusyError,
    check_safetensors,
    resolve_student_dir,
)

KEY = "swap-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_students_load_only_from_inside_the_configured_folder(tmp_path):
    root = tmp_path / "students"
    (root / "v2").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    assert resolve_student_dir(root, "v2") == (root / "v2").resolve()
    for name in ("../outside", str(tmp_path / "outside"), "escape", ".", "v2/../..", " "):
        with pytest.raises(EmbedkdError, match="students-dir"):
            resolve_student_dir(root, name)
    with pytest.raises(StudentNotFoundError):
        resolve_student_dir(root, "v3")


def test_only_safetensors_weights(tmp_path):
    good = tmp_path / "good"
    (good / "checkpoint-5").mkdir(parents=True)
    (good / "model.safetensors").write_bytes(b"x")
    (good / "checkpoint-5" / "optimizer.pt").write_bytes(b"x")  # training state is not loaded
    check_safetensors(good)
    (good / "2_Dense").mkdir()
    (good / "2_Dense" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(EmbedkdError, match="pickle-format weights"):
        check_safetensors(good)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedkdError, match="no .safetensors"):
        check_safetensors(tmp_path / "empty")


class FakeSwapper:
    def __init__(self, fail: type[Exception] | None = None) -> None:
        self.swapped, self.fail = [], fail

    def swap(self, folder):
        if self.fail is not None:
            raise self.fail("no")
        self.swapped.append(folder.name)
        return {"student": folder.name}


def _ready(folder, mtime: float | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / READY_MARKER).touch()
    if mtime is not None:
        os.utime(folder / READY_MARKER, (mtime, mtime))


def test_watcher_swaps_in_a_folder_once_its_marker_appears(tmp_path):
    _ready(tmp_path / "old")  # ready before start-up: already served or superseded
    swapper = FakeSwapper()
    watcher = StudentWatcher(tmp_path, swapper)
    (tmp_path / "partial").mkdir()  # being written: no marker yet
    assert watcher.poll() is None and swapper.swapped == []
    _ready(tmp_path / "v2", 1000)
    _ready(tmp_path / "v3", 2000)
    assert watcher.poll() == {"student": "v3"} and watcher.poll() is None  # the newest marker wins
    _ready(tmp_path / "partial", 3000)
    assert watcher.poll() == {"student": "partial"}
    bad = StudentWatcher(tmp_path, FakeSwapper(EmbedkdError))
    _ready(tmp_path / "v4", 4000)
    assert bad.poll() is None and bad.poll() is None  # logged once, not retried
    busy = StudentWatcher(tmp_path, FakeSwapper(SwapBusyError))
    _ready(tmp_path / "v5", 5000)
    assert busy.poll() is None and (tmp_path / "v5") not in busy.seen  # retried at the next look


class SlowEncoder(HashEncoder):
    """Blocks inside encode until released (a batch in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.id = self.name = "slow-old"
        self.entered, self.release = threading.Event(), threading.Event()

    def encode(self, texts, role="query", **kwargs):
        self.entered.set()
        self.release.wait(10)
        return super().encode(texts, role, **kwargs)


def test_a_batch_in_flight_finishes_on_the_old_student(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 5)
    build_index(corpus, HashTeacher(), tmp_path / "idx", cache_dir=tmp_path / "cache", show_progress=False)
    old, new = SlowEncoder(), HashEncoder()
    new.name = "new"
    svc = SearchService.open(tmp_path / "idx", old, None, ServiceOptions())
    out = {}
    thread = threading.Thread(target=lambda: out.update(result=svc.encode_queries(["q"])))
    thread.start()
    assert old.entered.wait(10)
    assert svc.swap_encoder(new) is old  # does not wait for the batch
    assert svc.encoder is new and svc.encoder_generation == 1
    old.release.set()
    thread.join(10)
    np.testing.assert_array_equal(out["result"][0], HashEncoder().encode(["q"]))
    svc.encode_queries(["x"])
    assert svc.last_encoder_generation() == 1
    with pytest.raises(EmbedkdError, match="16-d"):
        narrow = HashEncoder()
        narrow.dim = 8
        svc.swap_encoder(narrow)
    svc.close()


def test_admin_endpoints_refuse_when_no_key_is_configured(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 5)
    build_index(corpus, HashTeacher(), tmp_path / "idx", cache_dir=tmp_path / "cache", show_progress=False)
    svc = SearchService.open(tmp_path / "idx", HashEncoder(), HashTeacher(), ServiceOptions())
    with TestClient(create_app(ServeSettings(index_dir=tmp_path / "idx", student="hash"), svc)) as client:
        for method, path, body in ADMIN_CALLS:
            resp = client.request(method, path, json=body, headers=AUTH)
            assert resp.status_code == 403 and resp.json()["error"] == "forbidden", (path, resp.text)


ADMIN_CALLS = [("POST", "/admin/student", {"name": "v2"}), ("DELETE", "/admin/query-log", None)]


def _latency_stream(url: str, stop: threading.Event, log: list, failures: list) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        i = 0
        while not stop.is_set():
            start = time.perf_counter()
            try:
                resp = client.post("/search", json={"query": f"heart disease cohort {i}", "k": 5})
                if resp.status_code != 200:
                    failures.append(resp.status_code)
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            log.append((start, time.perf_counter() - start))
            i += 1


def _p99(latencies: list[float]) -> float:
    return float(np.quantile(latencies, 0.99)) if latencies else float("nan")


@pytest.fixture(scope="module")
def swap_server(tmp_path_factory, tiny_st_factory):
    root = tmp_path_factory.mktemp("swap")
    teacher_path = tiny_st_factory(hidden=32, seed=0)
    teacher = SentenceTransformerTeacher(teacher_path, max_seq_length=48)
    corpus = write_corpus(root / "corpus.jsonl", 40)
    build_index(
        corpus, teacher, root / "idx", teacher_name=teacher_path, cache_dir=root / "c", show_progress=False
    )
    students, watched = root / "students", root / "watched"
    watched.mkdir()
    for name, hidden, seed, recorded in (
        ("v2", 32, 0, teacher.id.replace("@seq48", "@seq64")),  # its teacher at another length: accepted
        ("wrong-teacher", 32, 0, "st:another/teacher@seq64"),
        ("narrow", 48, 0, None),  # tiny models other tests build too (one session builds each once)
        ("pickled", 32, 0, None),
    ):
        shutil.copytree(tiny_st_factory(hidden=hidden, seed=seed), students / name)
        if recorded:
            (students / name / "embedkd_fidelity.json").write_text(json.dumps({"teacher": recorded}))
    (students / "pickled" / "pytorch_model.bin").write_bytes(b"not loaded")
    args = ["--index-dir", str(root / "idx"), "--student", tiny_st_factory(hidden=32, seed=1)]
    args += ["--threads", "1", "--students-dir", str(students), "--watch-student", str(watched)]
    args += ["--watch-interval", "0.3"]
    server = Server(args, root / "server.log", env={"EMBEDKD_API_KEY": KEY}).wait_ready(180)
    yield server, students, watched
    server.stop()


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_swap_under_load_loses_no_request(swap_server, record_property):
    server, _, _ = swap_server
    stop, log, failures = threading.Event(), [], []
    clients = [
        threading.Thread(target=_latency_stream, args=(server.url, stop, log, failures)) for _ in range(4)
    ]
    for c in clients:
        c.start()
    try:
        time.sleep(3.0)  # before: steady state
        swap_start = time.perf_counter()
        resp = httpx.post(server.url + "/admin/student", json={"name": "v2"}, headers=AUTH, timeout=60)
        swap_end = time.perf_counter()
        time.sleep(1.0)  # after: the new student serving
    finally:
        stop.set()
        for c in clients:
            c.join(30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["student"].startswith("v2#") and body["dim"] == 32
    assert failures == []
    before = [dt for t, dt in log if t < swap_start]
    during = [dt for t, dt in log if swap_start <= t + dt and t <= swap_end]
    p99_before, p99_during = _p99(before), _p99(during)
    record_property("swap_p99_before_ms", round(p99_before * 1000, 1))
    record_property("swap_p99_during_ms", round(p99_during * 1000, 1))
    record_property("swap_requests", len(log))
    print(
        f"swap: {len(log)} requests, p99 before {p99_before * 1000:.1f} ms, during {p99_during * 1000:.1f} ms"
    )
    # The 2x target is measured by the benchmark; here only a gross stall fails (a noisy shared host).
    assert len(before) > 20 and during
    assert p99_during <= 2 * p99_before + 1.0
    assert httpx.get(server.url + "/stats").json()["student"].startswith("v2#")


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_bad_students_are_refused_and_the_served_one_stays(swap_server):
    server, _, _ = swap_server
    with httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as client:
        served = client.get("/stats").json()["student"]
        for name, status, words in (
            ("wrong-teacher", 400, "was distilled from teacher 'st:another/teacher@seq64'"),
            ("narrow", 400, "outputs 48-d vectors"),
            ("pickled", 400, "pickle-format weights"),
            ("../watched", 400, "outside --students-dir"),
            ("missing", 404, "no student folder"),
        ):
            resp = client.post("/admin/student", json={"name": name})
            assert resp.status_code == status and words in resp.json()["detail"], (name, resp.text)
        assert client.get("/stats").json()["student"] == served


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_watched_folder_is_swapped_in_once_marked_ready(swap_server, tiny_st_factory):
    server, _, watched = swap_server
    shutil.copytree(tiny_st_factory(hidden=32, seed=1), watched / "v3")  # no marker yet
    time.sleep(1.0)
    assert not httpx.get(server.url + "/stats").json()["student"].startswith("v3#")
    (watched / "v3" / READY_MARKER).touch()
    deadline = time.monotonic() + 60
    while not httpx.get(server.url + "/stats").json()["student"].startswith("v3#"):
        assert time.monotonic() < deadline, server.tail()
        time.sleep(0.2)
    assert httpx.post(server.url + "/search", json={"query": "gene expression", "k": 3}).status_code == 200


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_every_admin_endpoint_refuses_a_missing_or_wrong_key(swap_server):
    server, _, _ = swap_server
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    listed = {(m.upper(), p) for p, ops in paths.items() if p.startswith("/admin") for m in ops}
    assert listed == {(m, p) for m, p, _ in ADMIN_CALLS}  # a new admin endpoint must be added here
    for method, path, body in ADMIN_CALLS:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + KEY}):
            resp = httpx.request(method, server.url + path, json=body, headers=headers)
            assert resp.status_code == 401 and resp.json()["error"] == "unauthorized", (path, headers)


def test_a_swap_loads_with_short_gil_turns_and_no_collection_then_restores_both():
    import gc
    import sys

    from serve.swap import _short_gil_turns

    before, collecting = sys.getswitchinterval(), gc.isenabled()
    with _short_gil_turns(0.0002):
        assert sys.getswitchinterval() == pytest.approx(0.0002)
        assert not gc.isenabled()
    assert sys.getswitchinterval() == before and gc.isenabled() == collecting
    with pytest.raises(RuntimeError), _short_gil_turns(0.0002):
        raise RuntimeError("a student that fails to load")
    assert sys.getswitchinterval() == before and gc.isenabled() == collecting
    with _short_gil_turns(0):  # 0 turns it off
        assert sys.getswitchinterval() == before and gc.isenabled() == collecting
