"""Live alignment monitor: how closely the served student agrees with the teacher on real traffic.

A seeded random sample of the queries served by ``POST /search`` is handed, with the student's vector
of each, to a background thread through a bounded queue: :meth:`AlignmentMonitor.offer` never waits
(a full queue drops the sample and counts it), so the monitor cannot delay a response. The thread
embeds the samples with the teacher (at most ``budget_per_minute`` texts a minute; the rest are
skipped and counted), then for each one measures, with :mod:`embedkd.fidelity`:

* the cosine between the student's and the teacher's vector of the query;
* the top-10 overlap: the share of the teacher-vector search's top 10 on the live index that the
  student-vector search also returns.

Figures are rolling over the last ``window`` samples, with their trend (mean of the newer half minus
the older half) and a ``degraded`` flag when the mean cosine falls below ``alert``. With a
:class:`~serve.querylog.QueryLog`, each embedded sample is also logged with its teacher vector and
its two figures: the durable history that ``embedkd monitor report`` plots (:mod:`serve.monitor_report`).

After a hot swap (:meth:`AlignmentMonitor.reset`) the window starts afresh, and samples the previous
student produced are discarded rather than credited to the new one.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embedkd.fidelity import neighbour_overlap, vector_fidelity
from serve.querylog import QueryLog

logger = logging.getLogger(__name__)

#: texts -> teacher query vectors (float32, one row per text)
TeacherFn = Callable[[list[str]], np.ndarray]
#: (vectors, k) -> the ids of each vector's top-k documents on the live index
SearchFn = Callable[[np.ndarray, int], list[list[str]]]


@dataclass(frozen=True)
class MonitorConfig:
    """What the monitor samples and how it judges it.

    Attributes:
        sample: fraction of served queries sampled (0: off).
        window: rolling figures cover this many of the latest samples.
        alert: ``degraded`` when the rolling mean cosine is below this.
        budget_per_minute: most texts the teacher embeds for the monitor per minute.
        queue_size: samples waiting for the teacher at most; more are dropped.
        seed: seed of the sampling RNG (the same traffic samples the same queries).
        k: neighbours compared for the overlap.
        batch_size: most samples the teacher embeds in one call.
        nice: OS scheduling niceness of the monitor's thread (Linux; 0 keeps the service's): with
            spare cores it changes nothing, on busy ones the teacher yields them to serving.
    """

    sample: float = 0.0
    window: int = 200
    alert: float = 0.85
    budget_per_minute: int = 600
    queue_size: int = 256
    seed: int = 0
    k: int = 10
    batch_size: int = 8
    nice: int = 19


@dataclass(frozen=True)
class _Sample:
    text: str
    vector: np.ndarray
    generation: int  # which student produced ``vector``
    epoch: int  # the query log's epoch when sampled


class TokenBucket:
    """At most ``per_minute`` units a minute, refilled continuously (a burst may use a full minute's)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.rate, self.clock = float(per_minute), per_minute / 60.0, clock
        self.tokens, self.at = float(per_minute), clock()

    def take(self, n: int) -> int:
        """Take up to ``n`` units; returns how many were granted."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        granted = min(n, int(self.tokens))
        self.tokens -= granted
        return granted


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _trend(values: Sequence[float]) -> float | None:
    """Mean of the newer half minus mean of the older half (None under two values)."""
    half = len(values) // 2
    if half == 0:
        return None
    values = list(values)
    return float(np.mean(values[-half:]) - np.mean(values[:half]))


class AlignmentMonitor:
    """Samples served queries and tracks the student's agreement with the teacher on them.

    Args:
        config: sampling, window, alert and budget.
        teacher: embeds texts as queries with the teacher (runs in the monitor's thread).
        search: the live index's top-k ids for vectors (runs in the monitor's thread).
        log: where embedded samples are logged (None: keep only the figures).
        forget: deletes cached teacher vectors of queries that must not be kept (a sample embedded
            while the log was being cleared).
        metrics: Prometheus counters and histograms to feed (:class:`serve.metrics.MonitorMetrics`).
        clock: time source of the budget (tests).
    """

    def __init__(
        self,
        config: MonitorConfig,
        teacher: TeacherFn,
        search: SearchFn,
        *,
        log: QueryLog | None = None,
        forget: Callable[[list[str]], int] | None = None,
        metrics=None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config, self.teacher, self.search = config, teacher, search
        self.log, self.forget, self.metrics = log, forget, metrics
        self._queue: queue.Queue[_Sample] = queue.Queue(maxsize=config.queue_size)
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._budget = TokenBucket(config.budget_per_minute, clock)
        self._window: deque[tuple[float, float | None]] = deque(maxlen=config.window)
        self._counts = dict.fromkeys(
            ("sampled", "embedded", "dropped", "over_budget", "stale", "errors", "logged"), 0
        )
        self.generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ request path
    def offer(self, texts: Sequence[str], vectors: np.ndarray, generation: int = 0) -> int:
        """Sample among ``texts`` (served with ``vectors`` by student ``generation``); never blocks.

        Returns how many samples were queued.
        """
        with self._lock:
            picks = [i for i in range(len(texts)) if self._rng.random() < self.config.sample]
            self._counts["sampled"] += len(picks)
        epoch = self.log.epoch if self.log is not None else 0
        queued = 0
        for i in picks:
            try:
                self._queue.put_nowait(_Sample(texts[i], np.array(vectors[i]), generation, epoch))
                queued += 1
            except queue.Full:
                self._count("dropped", 1)
        if self.metrics is not None and picks:
            self.metrics.sampled.inc(len(picks))
        return queued

    def _count(self, name: str, n: int) -> None:
        if n:
            with self._lock:
                self._counts[name] += n
            if self.metrics is not None and name in ("dropped", "over_budget", "stale", "errors"):
                self.metrics.skipped.labels(name).inc(n)

    def reset(self, generation: int) -> None:
        """A new student serves from ``generation`` on: start the window afresh."""
        with self._lock:
            self.generation = generation
            self._window.clear()

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="embedkd-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread after the batch in hand (queued samples are abandoned)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("monitor thread still busy after %.0fs; leaving it (daemon)", timeout)

    def _run(self) -> None:
        _lower_priority(self.config.nice)
        while not self._stop.is_set():
            try:
                batch = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                continue
            while len(batch) < self.config.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.process(batch)
            except Exception:  # noqa: BLE001 - the monitor must outlive a teacher or search failure
                logger.exception("alignment monitor: %d sample(s) failed", len(batch))
                self._count("errors", len(batch))

    # ---------------------------------------------------------------- figures
    def process(self, batch: list[_Sample]) -> None:
        """Embed ``batch`` with the teacher, measure each sample, add it to the window and the log."""
        live = [s for s in batch if s.generation == self.generation]
        self._count("stale", len(batch) - len(live))
        with self._lock:
            granted = self._budget.take(len(live))
        self._count("over_budget", len(live) - granted)
        live = live[:granted]
        if not live:
            return
        texts = [s.text for s in live]
        teacher = np.asarray(self.teacher(texts), dtype=np.float32)
        student = np.stack([s.vector for s in live])
        cosines = [
            vector_fidelity(student[i : i + 1], teacher[i : i + 1])["cosine"] for i in range(len(live))
        ]
        hits = self.search(np.concatenate([student, teacher]), self.config.k)
        overlaps = [_overlap(hits[i], hits[len(live) + i]) for i in range(len(live))]
        with self._lock:
            self._counts["embedded"] += len(live)
            if live[0].generation == self.generation:
                self._window.extend(zip(cosines, overlaps))
        if self.metrics is not None:
            self.metrics.observe(cosines, overlaps)
        if self.log is not None:
            self._log(live, teacher, cosines, overlaps)

    def _log(
        self, live: list[_Sample], teacher: np.ndarray, cosines: list[float], overlaps: list[float | None]
    ) -> None:
        assert self.log is not None
        epoch = self.log.epoch
        keep = [i for i, s in enumerate(live) if s.epoch == epoch]
        written = 0
        if keep:
            texts = [live[i].text for i in keep]
            figures = [cosines[i] for i in keep], [overlaps[i] for i in keep]
            written = self.log.append(texts, teacher[keep], *figures, epoch=epoch)
        self._count("logged", written)
        if written < len(live) and self.forget is not None:  # sampled before a clear: keep nothing
            logged = {live[i].text for i in keep} if written else set()
            self.forget([s.text for s in live if s.text not in logged])

    def stats(self) -> dict:
        """The rolling figures and the counters (no query text)."""
        with self._lock:
            cosines = [c for c, _ in self._window]
            overlaps = [o for _, o in self._window if o is not None]
            counts = dict(self._counts)
        mean_cos = _mean(cosines)
        cfg = self.config
        return {
            "enabled": True,
            "sample_rate": cfg.sample,
            "window": cfg.window,
            "alert": cfg.alert,
            "budget_per_minute": cfg.budget_per_minute,
            "samples": len(cosines),
            "mean_cosine": mean_cos,
            f"top{cfg.k}_overlap": _mean(overlaps),
            "cosine_trend": _trend(cosines),
            f"top{cfg.k}_overlap_trend": _trend(overlaps),
            "degraded": mean_cos is not None and mean_cos < cfg.alert,
            "queued": self._queue.qsize(),
            **counts,
            "query_log_rows": self.log.count() if self.log is not None else None,
        }


def _lower_priority(nice: int) -> None:
    """Raise the calling thread's niceness by ``nice`` (threads it starts later, e.g. the teacher's
    OpenMP workers, inherit it); a no-op where the OS cannot do it per thread."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # pragma: no cover - depends on the platform
        logger.warning("alignment monitor: cannot lower its thread priority (%s)", exc)


def _overlap(student_ids: list[str], teacher_ids: list[str]) -> float | None:
    """Top-k overlap of one query's two result lists (cut to the shorter; None if either is empty)."""
    m = min(len(student_ids), len(teacher_ids))
    if m == 0:
        return None
    return neighbour_overlap(np.array([student_ids[:m]]), np.array([teacher_ids[:m]]))
