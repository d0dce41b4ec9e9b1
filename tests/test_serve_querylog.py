"""The query log's trim (serve.querylog): trimmed queries leave the teacher cache; older logs still open.

Unit tests drive :class:`QueryLog` directly (what the trim hands over, a failing hand-over, a log from
before the overlap column); one app test checks that a served query trimmed from the log has no teacher
vector left in the cache.
"""

from __future__ import annotations

import logging
import sqlite3
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import HashEncoder, HashTeacher, write_corpus

from embedkd.cache import TeacherCache
from embedkd.errors import EmbedkdError
from serve.app import create_app
from serve.builder import build_index
from serve.errors import StorageFullError
from serve.querylog import QUERY_LOG_FILE, QueryLog, read_monitor_history, read_query_log
from serve.service import SearchService, ServiceOptions
from serve.settings import ServeSettings

DIM = 4


def _vectors(n: int) -> np.ndarray:
    return np.ones((n, DIM), dtype=np.float32)


def test_trim_hands_over_only_the_texts_no_longer_logged(tmp_path):
    dropped: list[set[str]] = []
    log = QueryLog(
        tmp_path / QUERY_LOG_FILE,
        "t",
        DIM,
        max_rows=3,
        on_drop=lambda t: dropped.append(set(t)),
        forget_after=0,
    )
    log.append(["a", "b", "c"], _vectors(3))
    assert dropped == []
    log.append(["a", "d"], _vectors(2))  # trims the first a and b: a is still logged
    assert dropped == [{"b"}]
    log.append(["e"], _vectors(1))
    assert dropped[-1] == {"c"}
    log.append(["f", "g", "h", "i"], _vectors(4))  # more than the bound: f goes at once
    assert dropped[-1] == {"a", "d", "e", "f"}
    assert read_query_log(tmp_path, "t")[0] == ["g", "h", "i"] and log.count() == 3
    log.close()
    assert len(dropped) == 3  # nothing left for close


def test_trimmed_texts_wait_durably_for_one_batch(tmp_path):
    """Handed over together after ``forget_after``, or at close; a crash leaves them to the next open."""
    dropped: list[set[str]] = []
    path = tmp_path / QUERY_LOG_FILE
    log = QueryLog(path, "t", DIM, max_rows=2, on_drop=lambda t: dropped.append(set(t)), forget_after=3600)
    log.append(["a", "b", "c", "d"], _vectors(4))
    log.append(["e", "a"], _vectors(2))  # a is logged again: it stays out of the batch
    assert dropped == []
    after_crash: list[set[str]] = []  # another process opening the same file finds them
    reopened = QueryLog(path, "t", DIM, max_rows=2, on_drop=lambda t: after_crash.append(set(t)))
    assert reopened.forget_trimmed() == 3 and after_crash == [{"b", "c", "d"}]
    reopened.close()
    log.append(["f"], _vectors(1))  # trims e
    log.close()
    assert dropped == [{"e"}] and read_query_log(tmp_path, "t")[0] == ["a", "f"]
    log = QueryLog(path, "t", DIM, on_drop=lambda t: dropped.append(set(t)))
    assert log.forget_trimmed() == 0  # nothing left waiting
    log.close()


def test_a_failing_hand_over_is_logged_retried_and_blocks_a_clear(tmp_path, caplog):
    calls: list[list[str]] = []

    def broken(texts):
        calls.append(texts)
        raise OSError(28, "No space left on device")

    log = QueryLog(tmp_path / QUERY_LOG_FILE, "t", DIM, max_rows=1, on_drop=broken, forget_after=0)
    log.append(["a"], _vectors(1))
    with caplog.at_level(logging.ERROR, logger="serve.querylog"):
        assert log.append(["b"], _vectors(1)) == 1
        assert log.append(["c"], _vectors(1)) == 1  # within the retry delay: not tried again
    assert "could not be deleted yet" in caplog.text and calls == [["a"]] and log.count() == 1
    with pytest.raises(StorageFullError, match="deleting the trimmed queries"):
        log.clear()  # the log is kept: its texts would otherwise never leave the cache
    assert log.count() == 1
    log.on_drop = lambda texts: calls.append(sorted(texts))
    assert log.clear() == ["c"] and calls[-1] == ["a", "b"]
    log.close()


def test_figures_are_logged_and_a_log_without_the_overlap_column_still_opens(tmp_path):
    path = tmp_path / QUERY_LOG_FILE
    with sqlite3.connect(path) as db:  # a log written before the overlap column existed
        db.executescript(
            "CREATE TABLE query_log (id INTEGER PRIMARY KEY AUTOINCREMENT, query TEXT NOT NULL, "
            "teacher_vector BLOB NOT NULL, created REAL NOT NULL, student_cosine REAL);"
            "CREATE TABLE log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        )
        db.executemany(
            "INSERT INTO log_meta VALUES (?, ?)", [("format", "1"), ("teacher_id", "t"), ("dim", "4")]
        )
        db.execute("INSERT INTO query_log VALUES (NULL, 'old', ?, 100.0, 0.9)", (_vectors(1).tobytes(),))
        db.execute(
            "INSERT INTO query_log VALUES (NULL, 'unscored', ?, 101.0, NULL)", (_vectors(1).tobytes(),)
        )
    old = read_monitor_history(tmp_path)  # read-only, not migrated: no overlap column
    assert old.shape == (1, 3) and old[0, :2].tolist() == [100.0, 0.9] and np.isnan(old[0, 2])
    log = QueryLog(path, "t", DIM)
    before = time.time()
    log.append(["new"], _vectors(1), [0.5], [0.7])
    log.close()
    history = read_monitor_history(tmp_path)
    assert history.shape == (2, 3) and np.isnan(history[0, 2])  # the row without a cosine is left out
    assert history[1, 0] >= before and history[1, 1:].tolist() == [0.5, 0.7]
    assert read_query_log(tmp_path, "t")[0] == ["old", "unscored", "new"]


def test_queries_trimmed_from_the_served_log_leave_the_teacher_cache(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 12)
    build_index(corpus, HashTeacher(), tmp_path / "idx", cache_dir=tmp_path / "cache", show_progress=False)
    settings = ServeSettings(index_dir=tmp_path / "idx", student="hash", monitor_sample=1.0, query_log_max=3)
    svc = SearchService.open(
        tmp_path / "idx", HashEncoder(), HashTeacher(), ServiceOptions(cache_dir=str(tmp_path / "cache"))
    )
    texts = [f"private query {i}" for i in (0, 1, 2, 3, 4, 3, 5)]  # 3's first row goes, its second stays
    with TestClient(create_app(settings, svc)) as client:
        for text in texts:
            assert client.post("/search", json={"query": text, "k": 3}).status_code == 200
        monitor = _wait_logged(client, len(texts))
    assert monitor["query_log_rows"] == 3
    assert read_query_log(tmp_path / "idx")[0] == ["private query 4", "private query 3", "private query 5"]
    cache = TeacherCache.for_teacher(HashTeacher(), tmp_path / "cache")
    _, uncached = cache.missing(HashTeacher(), sorted(set(texts)), "query")
    assert sorted(uncached.values()) == ["private query 0", "private query 1", "private query 2"]


def _wait_logged(client: TestClient, n: int) -> dict:
    deadline = time.monotonic() + 20
    while (monitor := client.get("/stats").json()["monitor"])["logged"] < n:
        assert time.monotonic() < deadline, monitor
        time.sleep(0.02)
    return monitor


@pytest.mark.parametrize("max_rows", [0, -1])
def test_the_bound_must_be_positive(tmp_path, max_rows):
    with pytest.raises(EmbedkdError, match=f"--query-log-max must be >= 1, got {max_rows}"):
        QueryLog(tmp_path / QUERY_LOG_FILE, "t", DIM, max_rows=max_rows)
