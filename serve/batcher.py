"""Micro-batching: concurrent queries share one student forward pass, run off the event loop.

Requests put their texts on a queue; one worker takes everything waiting (up to ``max_size``) and
encodes it in a dedicated thread, so the event loop keeps accepting requests while the model runs,
and the queries that arrive during a forward pass form the next batch. When the last batch held more
than one text (the service is under load), the worker also waits up to ``max_wait_ms`` (≤ 5 ms) for
more before starting; a lone query on an idle service is encoded at once, so batching costs a
single client nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

logger = logging.getLogger(__name__)

EncodeFn = Callable[[list[str]], tuple[np.ndarray, list[bool]]]


class MicroBatcher:
    """Groups concurrent :meth:`encode` calls into batched calls of ``fn``.

    Args:
        fn: ``texts -> (vectors, truncated flags)``; runs in the batcher's own thread.
        max_size: most texts per forward pass.
        max_wait_ms: longest a batch waits for company once the service is under load (≤ 5).
        on_batch: called with ``(batch size, seconds)`` after each forward pass (metrics).
    """

    def __init__(
        self,
        fn: EncodeFn,
        max_size: int = 64,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_size < 1 or not 0 <= max_wait_ms <= 5:
            raise ValueError(f"need max_size >= 1 and 0 <= max_wait_ms <= 5, got {max_size}, {max_wait_ms}")
        self.fn, self.max_size, self.max_wait = fn, max_size, max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedkd-encode")
        self._last_size = 1

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

    async def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Vectors and truncation flags for ``texts``, encoded together with whatever else is waiting."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in texts]
        for text, fut in zip(texts, futures):
            self._queue.put_nowait((text, fut))
        done = await asyncio.gather(*futures)
        return np.stack([v for v, _ in done]), [t for _, t in done]

    async def _collect(self) -> list[tuple[str, asyncio.Future]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        while len(batch) < self.max_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if self._last_size > 1 and self.max_wait > 0:
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_size and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(text, fut) for text, fut in batch if not fut.done()]  # skip cancelled requests
            self._last_size = len(batch)
            if not live:
                continue
            start = time.perf_counter()
            try:
                vecs, truncated = await loop.run_in_executor(self._executor, self.fn, [t for t, _ in live])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(live), time.perf_counter() - start)
            for (_, fut), vec, cut in zip(live, vecs, truncated):
                if not fut.done():
                    fut.set_result((vec, cut))
