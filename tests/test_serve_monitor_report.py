"""``embedkd monitor report`` (serve.monitor_report): the monitor's history, plotted and summarized.

Unit tests check the rolling means and the summary on a log with known figures, and each clear error
(missing index directory, no log, an empty log, a service run with ``--no-query-log``). The e2e test
serves a real ``embedkd serve`` with the monitor on, swaps a misaligned student in, then reports: the
history shows the fall, and the queries the log's bound trimmed have left the teacher cache.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import REPO, HashEncoder, HashTeacher, Server, build_tiny_index, write_corpus

from embedkd.cache import TeacherCache
from embedkd.cli import main
from embedkd.errors import ConfigError
from embedkd.teachers import SentenceTransformerTeacher
from serve.app import create_app
from serve.builder import build_index
from serve.monitor_report import MonitorReportConfig, monitor_report, rolling_mean
from serve.querylog import QUERY_LOG_FILE, QueryLog, read_query_log
from serve.service import SearchService, ServiceOptions
from serve.settings import ServeSettings

DIM = 4


def test_rolling_mean_is_trailing_and_skips_missing_values():
    values = np.array([1.0, 3.0, np.nan, 5.0, np.nan, np.nan])
    np.testing.assert_allclose(rolling_mean(values, 2), [1.0, 2.0, 3.0, 5.0, 5.0, np.nan])
    np.testing.assert_allclose(rolling_mean(values, 10), [1.0, 2.0, 2.0, 3.0, 3.0, 3.0])


def _write_history(index_dir, cosines, overlaps) -> None:
    index_dir.mkdir(parents=True, exist_ok=True)
    log = QueryLog(index_dir / QUERY_LOG_FILE, "t", DIM)
    for i, (c, o) in enumerate(zip(cosines, overlaps)):
        log.append([f"q{i}"], np.ones((1, DIM), np.float32), [c], [o])
    log.close()


def test_report_plots_the_history_and_prints_its_summary(tmp_path, capsys):
    _write_history(tmp_path / "idx", [1.0] * 10 + [0.5] * 10, [1.0] * 10 + [0.3] * 10)
    out = tmp_path / "plots" / "monitor.png"
    args = ["monitor", "report", "--index-dir", str(tmp_path / "idx"), "--output", str(out), "--window", "5"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("20 monitor samples, ")
    assert "mean cosine: first 5 samples 1.0000, last 5 0.5000" in printed
    assert "top-10 overlap: first 1.0000, last 0.3000" in printed
    # rolling cosine over 5: 1.0 for the first 10, 0.9 at the 11th, then below 0.85: 9 of 20
    assert "degraded (rolling cosine < 0.85): 45.0% of samples" in printed
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (880, 660)
    summary = monitor_report(MonitorReportConfig(str(tmp_path / "idx"), str(out), window=5, alert=0.95))
    assert summary.degraded_share == pytest.approx(0.5) and summary.to_dict()["samples"] == 20


def test_report_errors_are_one_clear_line(tmp_path, capsys):
    (tmp_path / "no-log").mkdir()
    _write_history(tmp_path / "empty", [], [])
    for index_dir, words in (
        (tmp_path / "missing", f"index directory {tmp_path / 'missing'} does not exist"),
        (tmp_path / "no-log", "has no query log (query_log.sqlite); serve it with --monitor-sample"),
        (tmp_path / "empty", "holds no monitor samples yet"),
    ):
        code = main(["monitor", "report", "--index-dir", str(index_dir), "--output", str(tmp_path / "x.png")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()
    for bad, words in (({"window": 0}, "--window must be >= 1, got 0"), ({"alert": 2.0}, "got 2.0")):
        with pytest.raises(ConfigError, match=words):
            MonitorReportConfig(str(tmp_path), **bad)


def test_no_query_log_keeps_no_history_and_the_report_says_so(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl", 12)
    build_index(corpus, HashTeacher(), tmp_path / "idx", cache_dir=tmp_path / "cache", show_progress=False)
    settings = ServeSettings(index_dir=tmp_path / "idx", student="hash", monitor_sample=1.0, query_log=False)
    svc = SearchService.open(
        tmp_path / "idx", HashEncoder(), HashTeacher(), ServiceOptions(cache_dir=str(tmp_path / "cache"))
    )
    with TestClient(create_app(settings, svc)) as client:
        assert client.post("/search", json={"query": "heart disease", "k": 3}).status_code == 200
        deadline = time.monotonic() + 20
        while client.get("/stats").json()["monitor"]["embedded"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert main(["monitor", "report", "--index-dir", str(tmp_path / "idx")]) == 2
    assert "has no query log" in capsys.readouterr().err


KEY = "report-key"


def _search_and_wait(client: httpx.Client, texts: list[str], logged: int) -> None:
    for text in texts:
        assert client.post("/search", json={"query": text, "k": 5}).status_code == 200
    deadline = time.monotonic() + 60
    while (monitor := client.get("/stats").json()["monitor"])["logged"] < logged:
        assert time.monotonic() < deadline, monitor
        time.sleep(0.1)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_report_of_a_real_servers_history(tmp_path, tiny_st_factory):
    """Aligned student (the teacher), then a random one: the report's last window falls below the first,
    and the 4 queries the bound trimmed have no teacher vector left in the cache."""
    teacher_path = tiny_st_factory(hidden=32, seed=0)
    shutil.copytree(tiny_st_factory(hidden=32, seed=1), tmp_path / "students" / "random")
    build_tiny_index(tmp_path, teacher_path, 40)
    args = ["--index-dir", str(tmp_path / "idx"), "--student", teacher_path, "--teacher", teacher_path]
    args += ["--cache-dir", str(tmp_path / "cache"), "--threads", "1", "--monitor-sample", "1.0"]
    args += ["--query-log-max", "20", "--students-dir", str(tmp_path / "students")]
    aligned = [f"heart disease cohort {i}" for i in range(12)]
    misaligned = [f"protein folding trial {i}" for i in range(12)]
    server = Server(args, tmp_path / "server.log", env={"EMBEDKD_API_KEY": KEY}).wait_ready(180)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            _search_and_wait(client, aligned, 12)
            auth = {"Authorization": f"Bearer {KEY}"}
            assert client.post("/admin/student", json={"name": "random"}, headers=auth).status_code == 200
            _search_and_wait(client, misaligned, 24)
    finally:
        server.stop()
    cmd = [sys.executable, "-m", "embedkd", "-q", "monitor", "report", "--index-dir", str(tmp_path / "idx")]
    cmd += ["--output", str(tmp_path / "report.png"), "--window", "8"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("20 monitor samples")  # the log's bound
    first, last = (float(x.split()[-1]) for x in lines[1].split(", last"))
    assert first > 0.999 and last < 0.85, lines
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert read_query_log(tmp_path / "idx")[0] == aligned[4:] + misaligned
    teacher = SentenceTransformerTeacher(teacher_path)
    _, uncached = TeacherCache.for_teacher(teacher, tmp_path / "cache").missing(teacher, aligned, "query")
    assert sorted(uncached.values()) == sorted(aligned[:4])
