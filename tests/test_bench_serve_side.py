"""bench/serve_side.py: the c1-over-bare ratio from side-by-side rounds (pure logic, no server)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _serve_side():
    spec = importlib.util.spec_from_file_location("bench_serve_side", BENCH / "serve_side.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_side_by_side_is_the_median_of_per_round_ratios():
    side = _serve_side().side_by_side([10.0, 20.0, 10.0], [13.0, 30.0, 20.0])
    assert side["c1_p50_over_bare_rounds"] == [1.3, 1.5, 2.0]
    # the median ratio (1.5), not the ratio of the medians (20 / 10 = 2.0)
    assert side["c1_p50_over_bare"] == 1.5
    assert side["c1_p50_over_bare_range"] == [1.3, 2.0]
    assert side["bare_encode_plus_search_ms"] == 10.0
    assert side["c1_p50_ms_median_of_rounds"] == 20.0
    assert side["bare_encode_plus_search_ms_rounds"] == [10.0, 20.0, 10.0]
    assert side["c1_p50_ms_rounds"] == [13.0, 30.0, 20.0]


def test_side_by_side_even_rounds_and_bad_input():
    side_by_side = _serve_side().side_by_side
    assert side_by_side([10.0, 10.0], [12.0, 13.0])["c1_p50_over_bare"] == 1.25
    with pytest.raises(ValueError, match="1 bare and 2 c1"):
        side_by_side([10.0], [12.0, 13.0])
    with pytest.raises(ValueError, match="0 bare"):
        side_by_side([], [])
    with pytest.raises(ValueError, match=r"positive, got \[10.0, 0.0\]"):
        side_by_side([10.0, 0.0], [12.0, 13.0])


class _FakeTimer:
    """Bare medians of 10 ms for round 0, 20 ms for round 1, ...; records what it timed."""

    def __init__(self, events: list) -> None:
        self.events = events

    def time(self, batch: list[str]) -> dict:
        self.events.append(("bare", batch))
        ms = 10.0 * sum(1 for kind, _ in self.events if kind == "bare")
        return {"encode_ms": ms - 1, "search_ms": 1.0, "encode_plus_search_ms": ms}


def test_alternate_rounds_times_bare_then_served_on_the_same_queries():
    events: list = []

    def serve(batch):
        events.append(("served", batch))
        bare_ms = 10.0 * sum(1 for kind, _ in events if kind == "bare")
        return [bare_ms * 1.5 / 1000] * len(batch), 0.5  # every round served at 1.5x its bare time

    queries = ["a", "b", "c", "d", "e"]
    latencies, wall, side = _serve_side().alternate_rounds(
        _FakeTimer(events), serve, queries, rounds=3, n=2, settle_s=0
    )
    assert events == [
        ("bare", ["a", "b"]),
        ("served", ["a", "b"]),
        ("bare", ["c", "d"]),
        ("served", ["c", "d"]),
        ("bare", ["e", "a"]),  # wraps around the pool
        ("served", ["e", "a"]),
    ]
    assert len(latencies) == 6 and wall == 1.5
    assert side["c1_p50_over_bare_rounds"] == [1.5, 1.5, 1.5]
    assert side["bare_encode_plus_search_ms_rounds"] == [10.0, 20.0, 30.0]
    assert side["bare_encode_ms"] == 19.0 and side["bare_search_ms"] == 1.0
