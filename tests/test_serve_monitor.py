"""The live alignment monitor (serve.monitor) and the query log (serve.querylog).

Unit tests drive :class:`AlignmentMonitor` with fakes (exact figures, a blocked teacher, a fake clock);
the e2e test serves a real ``embedkd serve`` with the monitor on: its figures fall when a misaligned
student is swapped in, a flood is dropped, not queued, and the log survives ``kill -9`` within its bound.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import HashEncoder, HashTeacher, Server, build_tiny_index, write_corpus

from embedkd.errors import EmbedkdError
from serve.app import create_app
from serve.builder import build_index
from serve.monitor import AlignmentMonitor, MonitorConfig, TokenBucket, _Sample
from serve.querylog import QUERY_LOG_FILE, QueryLog, read_query_log
from serve.service import SearchService, ServiceOptions
from serve.settings import ServeSettings

DIM = 8
RNG = np.random.default_rng(0)
BANK = RNG.standard_normal((50, DIM)).astype(np.float32)


def teacher_vec(text: str) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(text.encode())).standard_normal(DIM).astype(np.float32)


def bank_search(vectors: np.ndarray, k: int) -> list[list[str]]:
    """Top-k ids of ``vectors`` among :data:`BANK` (cosine)."""
    unit = BANK / np.linalg.norm(BANK, axis=1, keepdims=True)
    q = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return [[f"d{i}" for i in np.argsort(-row)[:k]] for row in q @ unit.T]


def teacher(texts):
    return np.stack([teacher_vec(t) for t in texts])


def samples(texts, noise: float = 0.0, generation: int = 0, epoch: int = 0) -> list[_Sample]:
    rng = np.random.default_rng(1)
    return [
        _Sample(t, teacher_vec(t) + noise * rng.standard_normal(DIM).astype(np.float32), generation, epoch)
        for t in texts
    ]


def test_figures_trend_and_degraded_flag():
    monitor = AlignmentMonitor(MonitorConfig(sample=1.0, window=20, alert=0.85), teacher, bank_search)
    monitor.process(samples([f"q{i}" for i in range(10)]))  # the student is the teacher: perfect
    stats = monitor.stats()
    assert stats["samples"] == 10 and stats["mean_cosine"] == pytest.approx(1.0)
    assert stats["top10_overlap"] == 1.0 and stats["degraded"] is False and stats["cosine_trend"] == 0.0
    monitor.process(samples([f"r{i}" for i in range(10)], noise=3.0))  # then far off
    stats = monitor.stats()
    assert stats["samples"] == 20 and stats["mean_cosine"] < 0.85 and stats["degraded"] is True
    assert stats["cosine_trend"] < -0.3 and stats["top10_overlap_trend"] < 0
    monitor.process(samples([f"s{i}" for i in range(10)], noise=3.0))  # the window keeps the last 20
    assert monitor.stats()["cosine_trend"] == pytest.approx(0.0, abs=0.25)


def test_sampling_is_seeded_and_respects_the_rate():
    def picks(seed):
        m = AlignmentMonitor(MonitorConfig(sample=0.1, seed=seed, queue_size=10_000), teacher, bank_search)
        texts = [f"q{i}" for i in range(2000)]
        m.offer(texts, np.zeros((len(texts), DIM), np.float32))
        return [s.text for s in list(m._queue.queue)]

    first = picks(7)
    assert first == picks(7) and first != picks(8)
    assert 150 < len(first) < 250


def test_a_flood_is_dropped_and_counted_never_waited_for():
    """The teacher is stuck: offering thousands of queries still returns at once; the excess is dropped."""
    release, busy = threading.Event(), threading.Event()

    def stuck_teacher(texts):
        busy.set()
        release.wait(30)
        return teacher(texts)

    cfg = MonitorConfig(sample=1.0, queue_size=4, batch_size=2, budget_per_minute=10_000)
    monitor = AlignmentMonitor(cfg, stuck_teacher, bank_search)
    monitor.start()
    try:
        monitor.offer(["first", "second"], np.ones((2, DIM), np.float32))
        assert busy.wait(10)
        texts = [f"flood {i}" for i in range(5000)]
        start = time.perf_counter()
        queued = monitor.offer(texts, np.ones((len(texts), DIM), np.float32))
        assert time.perf_counter() - start < 2.0  # microseconds per query, whatever the teacher does
        stats = monitor.stats()
        assert queued == 4 and stats["dropped"] == 4996 and stats["queued"] == 4
        assert stats["sampled"] == 5002
    finally:
        release.set()
        monitor.stop()
    assert monitor.stats()["errors"] == 0


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread priority needs os.setpriority (Linux)")
@pytest.mark.parametrize("nice", [0, 7])
def test_teacher_work_runs_at_the_configured_niceness(nice):
    """The monitor's thread (and so its teacher's work) yields the cores to serving by ``nice`` levels."""
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen, done = [], threading.Event()

    def recording_teacher(texts):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        done.set()
        return teacher(texts)

    monitor = AlignmentMonitor(MonitorConfig(sample=1.0, nice=nice), recording_teacher, bank_search)
    monitor.start()
    try:
        monitor.offer(["a query"], np.ones((1, DIM), np.float32))
        assert done.wait(10)
    finally:
        monitor.stop()
    assert seen == [min(19, base + nice)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # serving threads untouched


def test_budget_limits_teacher_work_per_minute():
    now = [0.0]
    bucket = TokenBucket(6, clock=lambda: now[0])
    assert bucket.take(4) == 4 and bucket.take(4) == 2 and bucket.take(1) == 0
    now[0] = 30.0  # half a minute refills half the budget
    assert bucket.take(10) == 3
    calls = []
    monitor = AlignmentMonitor(
        MonitorConfig(sample=1.0, budget_per_minute=5),
        lambda texts: calls.append(len(texts)) or teacher(texts),
        bank_search,
        clock=lambda: now[0],
    )
    monitor.process(samples([f"q{i}" for i in range(8)]))
    assert calls == [5] and monitor.stats()["over_budget"] == 3 and monitor.stats()["embedded"] == 5


def test_swap_restarts_the_window_and_drops_the_old_students_samples():
    monitor = AlignmentMonitor(MonitorConfig(sample=1.0), teacher, bank_search)
    monitor.process(samples(["a", "b"], noise=3.0))
    monitor.reset(1)
    assert monitor.stats()["samples"] == 0
    monitor.process(samples(["c"], generation=0) + samples(["d"], generation=1))
    stats = monitor.stats()
    assert stats["samples"] == 1 and stats["stale"] == 1 and stats["mean_cosine"] == pytest.approx(1.0)


def test_query_log_is_bounded_durable_and_clearable(tmp_path):
    log = QueryLog(tmp_path / QUERY_LOG_FILE, "t-1", DIM, max_rows=5)
    texts = [f"query {i}" for i in range(8)]
    for i in range(0, 8, 3):
        log.append(texts[i : i + 3], teacher(texts[i : i + 3]), [0.5] * len(texts[i : i + 3]))
    assert log.count() == 5
    read, vectors = read_query_log(tmp_path, "t-1")
    assert read == texts[3:] and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, teacher(texts[3:]))
    epoch = log.epoch
    assert log.clear() == texts[3:] and log.count() == 0
    assert log.append(["late"], teacher(["late"]), epoch=epoch) == 0  # sampled before the clear
    log.close()
    with pytest.raises(EmbedkdError, match="holds vectors of 't-1'"):
        QueryLog(tmp_path / QUERY_LOG_FILE, "another-teacher", DIM)
    with pytest.raises(EmbedkdError, match="does not exist"):
        read_query_log(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedkdError, match="no query log"):
        read_query_log(tmp_path / "empty")


def test_monitor_logs_samples_and_forgets_those_sampled_before_a_clear(tmp_path):
    log = QueryLog(tmp_path / QUERY_LOG_FILE, "t", DIM)
    forgotten = []
    monitor = AlignmentMonitor(
        MonitorConfig(sample=1.0), teacher, bank_search, log=log, forget=lambda t: forgotten.extend(t) or 0
    )
    monitor.process(samples(["kept one", "kept two"], epoch=log.epoch))
    old = samples(["in flight"], epoch=log.epoch)
    log.clear()
    monitor.process(old)
    assert log.count() == 0 and forgotten == ["in flight"] and monitor.stats()["logged"] == 2


def _app_client(tmp_path, **settings) -> TestClient:
    corpus = write_corpus(tmp_path / "corpus.jsonl", 12)
    build_index(corpus, HashTeacher(), tmp_path / "idx", cache_dir=tmp_path / "cache", show_progress=False)
    cfg = ServeSettings(index_dir=tmp_path / "idx", student="hash", **settings)
    opts = ServiceOptions(cache_dir=str(tmp_path / "cache"))
    svc = SearchService.open(tmp_path / "idx", HashEncoder(), HashTeacher(), opts)
    return TestClient(create_app(cfg, svc))


def test_stats_and_metrics_show_the_monitor_but_never_query_text(tmp_path):
    with _app_client(tmp_path, api_key="k", monitor_sample=1.0, query_log_max=3) as client:
        for i in range(5):
            assert client.post("/search", json={"query": f"secret query {i}", "k": 3}).status_code == 200
        deadline = time.monotonic() + 20
        while client.get("/stats").json()["monitor"]["logged"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = client.get("/stats")
        monitor = stats.json()["monitor"]
        assert monitor["samples"] == 5 and monitor["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
        assert monitor["top10_overlap"] == 1.0 and monitor["query_log_rows"] == 3
        metrics = client.get("/metrics").text
        assert "embedkd_monitor_cosine 1.0" in metrics and "embedkd_monitor_degraded 0.0" in metrics
        assert "# TYPE embedkd_monitor_skipped_total counter" in metrics
        for path in ("/stats", "/metrics", "/healthz", "/openapi.json"):
            assert "secret query" not in client.get(path).text
        assert client.get("/healthz").json().keys() == {"status", "documents"}
        deleted = client.delete("/admin/query-log", headers={"Authorization": "Bearer k"}).json()
        assert deleted == {"deleted": 3, "cache_vectors_deleted": 3}
    assert read_query_log(tmp_path / "idx")[0] == []


def test_monitor_is_off_by_default(tmp_path):
    with _app_client(tmp_path) as client:
        assert client.get("/stats").json()["monitor"] == {"enabled": False}
        assert "embedkd_monitor" not in client.get("/metrics").text
    assert not (tmp_path / "idx" / QUERY_LOG_FILE).exists()


KEY = "monitor-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _wait_for(client: httpx.Client, done, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        monitor = client.get("/stats").json()["monitor"]
        if done(monitor):
            return monitor
        time.sleep(0.1)
    raise AssertionError(f"monitor never got there: {monitor}")


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_live_monitor_and_query_log_on_a_real_server(tmp_path, tiny_st_factory):
    """Aligned student (the teacher itself), then a random one swapped in: the figures fall and the
    service reports ``degraded``; a flood is dropped; the log keeps its bound and survives kill -9."""
    teacher_path = tiny_st_factory(hidden=32, seed=0)
    students = tmp_path / "students"
    shutil.copytree(tiny_st_factory(hidden=32, seed=1), students / "random")
    build_tiny_index(tmp_path, teacher_path, 40)
    args = ["--index-dir", str(tmp_path / "idx"), "--student", teacher_path, "--teacher", teacher_path]
    args += ["--cache-dir", str(tmp_path / "cache"), "--threads", "1", "--monitor-sample", "1.0"]
    args += ["--monitor-window", "12", "--monitor-queue", "16", "--query-log-max", "20"]
    args += ["--students-dir", str(students)]
    server = Server(args, tmp_path / "server.log", env={"EMBEDKD_API_KEY": KEY}).wait_ready(180)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            _check_figures_move(client)
            _check_flood_is_dropped(client)
            logged = _kill_9_while_logging(server, client, 30)
    finally:
        server.stop()
    texts, vectors = read_query_log(tmp_path / "idx")
    assert len(texts) == 20 and vectors.shape == (20, 32)  # the bound, after > 30 were logged
    with sqlite3.connect(tmp_path / "idx" / QUERY_LOG_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        last_id = db.execute("SELECT MAX(id) FROM query_log").fetchone()[0]
    assert last_id >= logged  # every row committed before the kill is there


def _check_figures_move(client: httpx.Client) -> None:
    for i in range(12):
        assert client.post("/search", json={"query": f"heart disease cohort {i}", "k": 5}).status_code == 200
    aligned = _wait_for(client, lambda m: m["samples"] >= 12)
    assert aligned["mean_cosine"] > 0.999 and aligned["top10_overlap"] == 1.0 and not aligned["degraded"]
    swapped = client.post("/admin/student", json={"name": "random"}, headers=AUTH)
    assert swapped.status_code == 200, swapped.text
    for i in range(12):
        assert client.post("/search", json={"query": f"protein folding trial {i}", "k": 5}).status_code == 200
    misaligned = _wait_for(client, lambda m: m["samples"] >= 12)
    assert misaligned["mean_cosine"] < 0.85 and misaligned["degraded"] is True
    assert misaligned["top10_overlap"] < 0.9
    metrics = client.get("/metrics").text
    assert "embedkd_monitor_degraded 1.0" in metrics and "embedkd_monitor_sample_cosine_count" in metrics


def _check_flood_is_dropped(client: httpx.Client) -> None:
    before = client.get("/stats").json()["monitor"]["dropped"]
    batch = {"queries": [f"flood query {i}" for i in range(64)], "k": 3}
    for _ in range(3):
        assert client.post("/search", json=batch).status_code == 200
    monitor = _wait_for(client, lambda m: m["queued"] == 0)
    assert monitor["dropped"] > before and monitor["errors"] == 0


def _kill_9_while_logging(server: Server, client: httpx.Client, n: int) -> int:
    """Stream single queries; once more than ``n`` rows are logged, read the committed count and
    ``kill -9`` the server at once (mid-stream). Returns that count."""
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            i = 0
            while not stop.is_set():
                try:
                    c.post("/search", json={"query": f"vaccine trial question {i}", "k": 3})
                except httpx.HTTPError:
                    return
                i += 1

    writer = threading.Thread(target=stream)
    writer.start()
    try:
        logged = _wait_for(client, lambda m: m["logged"] > n)["logged"]
        server.kill9()
    finally:
        stop.set()
        writer.join(30)
    return logged
