"""``serve_load.py``'s side-by-side comparison: the service at concurrency 1 against bare encode+search.

"Bare" is what one search request costs without the service around it: one ``encode`` of one query plus
one index search, in this process, through the loader the service itself uses
(:func:`serve.encoders.load_query_encoder`) with the server's backend, quantization and threads.
:class:`BareTimer` times it; :func:`alternate_rounds` times bare and then the served requests on the
same queries, round after round, never both at once; :func:`side_by_side` turns the rounds into the
headline ratio, so that the load the machine carries during a round weighs on both sides of that
round's ratio alike.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

logger = logging.getLogger("bench.serve_side")
SETTLE_S = 0.2  # between bare and served phases: lets the other side's worker threads stop spinning


class BareTimer:
    """One query encoder and the index, loaded in this process, to time encode + search per query.

    Args:
        index_dir: index directory built by ``embedkd index`` (read only).
        model: the query encoder (SentenceTransformer directory or id).
        backend: query encoder runtime (``torch``, ``onnx``, ...), as the server's ``--backend``.
        quantize: ``int8`` or ``None``, as the server's ``--quantize``.
        threads: CPU threads for encoding and search, as the server's ``--threads`` (``None``: default).
        k: results per search.
    """

    def __init__(
        self, index_dir: str, model: str, *, backend: str, quantize: str | None, threads: int | None, k: int
    ) -> None:
        from serve.encoders import load_query_encoder
        from serve.snapshot import read_meta, read_snapshot
        from serve.threads import set_threads

        if threads:
            set_threads(threads)
        meta = read_meta(index_dir)
        self.index = read_snapshot(index_dir, meta).index
        self.encoder = load_query_encoder(model, meta, backend=backend, quantize=quantize, threads=threads)
        self.k = k
        self.encoder_id = getattr(self.encoder, "id", None)  # e.g. onnx-int8:...: which graph is timed

    def warm_up(self, queries: list[str]) -> None:
        """Run ``queries`` once, untimed (first-call allocations, caches)."""
        for q in queries:
            self.index.search(self.encoder.encode([q], "query"), self.k)

    def time(self, queries: list[str]) -> dict:
        """Medians over ``queries``, one at a time, in ms (unrounded): encode, search, and both."""
        enc, srch, total = [], [], []
        for q in queries:
            t0 = time.perf_counter()
            vec, _ = self.encoder.encode([q], "query"), self.encoder.truncated([q])  # as the service does
            t1 = time.perf_counter()
            self.index.search(vec, self.k)
            t2 = time.perf_counter()
            enc.append(t1 - t0)
            srch.append(t2 - t1)
            total.append(t2 - t0)
        med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
        return {"encode_ms": med(enc), "search_ms": med(srch), "encode_plus_search_ms": med(total)}


def side_by_side(bare_ms: list[float], c1_p50_ms: list[float]) -> dict:
    """The c1-over-bare ratio from rounds that each time bare, then the service at concurrency 1.

    Each round's ratio divides its c1 p50 by its own bare time; the headline is the median of those
    ratios (not the ratio of the medians), so a round slowed by other work on the machine moves its
    own ratio less than either number.

    Args:
        bare_ms: per round, the median bare encode+search time (ms).
        c1_p50_ms: per round, the concurrency-1 p50 latency (ms), same order.

    Returns:
        ``c1_p50_over_bare`` (median per-round ratio), ``c1_p50_over_bare_rounds``,
        ``c1_p50_over_bare_range`` ([min, max]), ``bare_encode_plus_search_ms`` (median over rounds),
        ``bare_encode_plus_search_ms_rounds``, ``c1_p50_ms_median_of_rounds`` and ``c1_p50_ms_rounds``;
        ratios rounded to 3 decimals, times to 3.

    Raises:
        ValueError: no rounds, lists of different lengths, or a bare time that is not positive.
    """
    if not bare_ms or len(bare_ms) != len(c1_p50_ms):
        raise ValueError(
            f"need one bare time per c1 round and at least one round; got {len(bare_ms)} bare and "
            f"{len(c1_p50_ms)} c1 values"
        )
    if min(bare_ms) <= 0:
        raise ValueError(f"bare times must be positive, got {bare_ms}")
    ratios = [c1 / bare for c1, bare in zip(c1_p50_ms, bare_ms)]
    r3 = lambda xs: [round(x, 3) for x in xs]  # noqa: E731
    return {
        "c1_p50_over_bare": round(statistics.median(ratios), 3),
        "c1_p50_over_bare_rounds": r3(ratios),
        "c1_p50_over_bare_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "bare_encode_plus_search_ms": round(statistics.median(bare_ms), 3),
        "bare_encode_plus_search_ms_rounds": r3(bare_ms),
        "c1_p50_ms_median_of_rounds": round(statistics.median(c1_p50_ms), 3),
        "c1_p50_ms_rounds": r3(c1_p50_ms),
    }


def alternate_rounds(
    timer: BareTimer,
    serve: Callable[[list[str]], tuple[list[float], float]],
    queries: list[str],
    rounds: int,
    n: int,
    settle_s: float = SETTLE_S,
) -> tuple[list[float], float, dict]:
    """``rounds`` rounds of: bare timing on ``n`` queries, then the same queries served at concurrency 1.

    Round ``r`` takes queries ``r*n`` to ``r*n + n - 1`` (wrapping around ``queries``). Phases run one
    after the other with ``settle_s`` seconds between them, so the in-process encoder and the server
    never work at the same time.

    Args:
        timer: the in-process bare timer (its ``time(batch)`` gives medians in ms).
        serve: sends ``batch`` to the service one request at a time; each latency (s) and the wall time.
        queries: the query pool.
        rounds: number of rounds (at least 1).
        n: queries per round.
        settle_s: pause after each phase.

    Returns:
        All served latencies (s), their total wall time (s), and :func:`side_by_side`'s record plus
        ``bare_encode_ms`` / ``bare_search_ms`` (medians over rounds).
    """
    bare, p50s, latencies, wall = [], [], [], 0.0
    for r in range(rounds):
        batch = [queries[(r * n + i) % len(queries)] for i in range(n)]
        bare.append(timer.time(batch))
        time.sleep(settle_s)
        lat, w = serve(batch)
        time.sleep(settle_s)
        p50s.append(statistics.median(lat) * 1000)
        latencies += lat
        wall += w
        logger.info(
            "c1 round %d: bare %.2f ms, c1 p50 %.2f ms", r, bare[-1]["encode_plus_search_ms"], p50s[-1]
        )
    side = side_by_side([b["encode_plus_search_ms"] for b in bare], p50s)
    for part in ("encode", "search"):
        side[f"bare_{part}_ms"] = round(statistics.median(b[f"{part}_ms"] for b in bare), 3)
    return latencies, wall, side
