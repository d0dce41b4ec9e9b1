"""Micro-batching: concurrent queries share one student forward pass, run off the event loop.

Each request is a job (its texts, and optionally what to do with their vectors, e.g. search the
index). One worker takes the jobs waiting (up to ``max_size`` texts) and runs them in a dedicated
thread: one forward pass over all their texts, then each job's follow-up on its own rows. The event
loop keeps accepting requests meanwhile, and the jobs that arrive during a forward pass form the next
batch. When the last batch held more than one job (the service is under load), the worker also waits
up to ``max_wait_ms`` (≤ 5 ms) for more before starting; a lone query on an idle service is encoded at
once, so batching costs a single client nothing. Running the follow-up in the same thread spares each
request a second thread hand-off.

A small request (at most ``inline_max`` texts) that finds nothing in flight and nothing waiting skips
the encoding thread altogether: it is encoded and followed up in the event-loop thread, which saves the
two thread wake-ups of a hand-off there and back (about a millisecond on a small shared machine, a
fifth of a small student's query). The loop is busy for that one forward pass, as the encoding thread
would have been; requests arriving meanwhile wait in the socket and form the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

EncodeFn = Callable[[list[str]], tuple[np.ndarray, list[bool]]]
Then = Callable[[np.ndarray, list[bool]], Any]


@dataclass
class _Job:
    texts: list[str]
    then: Then | None
    future: asyncio.Future


class MicroBatcher:
    """Groups concurrent :meth:`submit` calls into batched calls of ``fn``.

    Args:
        fn: ``texts -> (vectors, truncated flags)``; runs in the batcher's own thread.
        max_size: most texts per forward pass (a single larger request is encoded on its own).
        max_wait_ms: longest a batch waits for company once the service is under load (≤ 5).
        on_batch: called with ``(texts, seconds)`` after each forward pass (metrics).
        inline_max: most texts of a request run in the event-loop thread when the batcher is idle
            (0: never).
    """

    def __init__(
        self,
        fn: EncodeFn,
        max_size: int = 64,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int, float], None] | None = None,
        *,
        inline_max: int = 0,
    ) -> None:
        if max_size < 1 or not 0 <= max_wait_ms <= 5 or inline_max < 0:
            raise ValueError(
                "need max_size >= 1, 0 <= max_wait_ms <= 5 and inline_max >= 0, got "
                f"{max_size}, {max_wait_ms}, {inline_max}"
            )
        self.fn, self.max_size, self.max_wait = fn, max_size, max_wait_ms / 1000
        self.on_batch, self.inline_max = on_batch, inline_max
        self._busy = False  # a batch is being collected or encoded
        self.inline_jobs = 0  # requests run in the event-loop thread (tests, metrics)
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedkd-encode")
        self._last_jobs = 1

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="embedkd-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, texts: Sequence[str], then: Then | None = None) -> Any:
        """Encode ``texts`` with whatever else is waiting; return ``then(vectors, truncated)``
        (computed in the encoding thread) or, without ``then``, ``(vectors, truncated)``."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        job = _Job(list(texts), then, asyncio.get_running_loop().create_future())
        if len(job.texts) <= self.inline_max and not self._busy and self._queue.empty():
            return self._inline(job)
        self._queue.put_nowait(job)
        return await job.future

    def _inline(self, job: _Job) -> Any:
        """Run ``job`` now, in this (the event loop's) thread: nothing else is in flight or waiting."""
        self._busy, self._last_jobs = True, 1
        self.inline_jobs += 1
        try:
            ok, value = self._process([job])[0]
        finally:
            self._busy = False
        if not ok:
            raise value
        return value

    async def _collect(self) -> list[_Job]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        self._busy = True
        size = len(batch[0].texts)
        while size < self.max_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
            size += len(batch[-1].texts)
        if self._last_jobs > 1 and self.max_wait > 0:
            deadline = time.monotonic() + self.max_wait
            while size < self.max_size and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
                size += len(batch[-1].texts)
        return batch

    def _process(self, jobs: list[_Job]) -> list[tuple[bool, Any]]:
        """In the encoding thread: one forward pass, then each job's follow-up on its rows."""
        texts = [t for job in jobs for t in job.texts]
        start = time.perf_counter()
        vectors, truncated = self.fn(texts)
        if self.on_batch is not None:
            self.on_batch(len(texts), time.perf_counter() - start)
        out, row = [], 0
        for job in jobs:
            n = len(job.texts)
            vecs, cut = vectors[row : row + n], list(truncated[row : row + n])
            row += n
            try:
                out.append((True, job.then(vecs, cut) if job.then else (vecs, cut)))
            except Exception as exc:  # noqa: BLE001 - belongs to this job only
                out.append((False, exc))
        return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self._last_jobs = len(batch)
            live = [job for job in batch if not job.future.done()]  # skip cancelled requests
            if not live:
                self._busy = False
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._process, live)
            except Exception as exc:  # noqa: BLE001 - the forward pass failed: every job gets the error
                results = [(False, exc)] * len(live)
            finally:
                self._busy = not self._queue.empty()  # jobs that came meanwhile are the next batch
            for job, (ok, value) in zip(live, results):
                if job.future.done():
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)
