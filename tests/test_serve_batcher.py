"""serve.batcher: concurrent queries share forward passes, run off the event loop, wait boundedly."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serve.batcher import MicroBatcher


class FakeEncoder:
    """Vector = [len(text), batch number]; each call blocks its thread like a forward pass."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds, self.batches = seconds, []

    def __call__(self, texts: list[str]):
        self.batches.append(list(texts))
        time.sleep(self.seconds)
        n = len(self.batches)
        return np.array([[len(t), n] for t in texts], np.float32), [len(t) > 5 for t in texts]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_queries_share_forward_passes():
    enc = FakeEncoder()

    async def main():
        b = MicroBatcher(enc, max_size=64, max_wait_ms=2)
        await b.start()
        texts = ["x" * (i + 1) for i in range(20)]
        first = asyncio.create_task(b.submit([texts[0]]))
        await asyncio.sleep(0.01)  # the first forward pass is running now
        outs = [await first, *await asyncio.gather(*(b.submit([t]) for t in texts[1:]))]
        await b.stop()
        return texts, outs

    texts, outs = run(main())
    assert [len(batch) for batch in enc.batches] == [1, 19]  # the rest queued during the first pass
    for text, (vecs, truncated) in zip(texts, outs):
        assert vecs.shape == (1, 2) and vecs[0, 0] == len(text)
        assert truncated == [len(text) > 5]


def test_batches_never_exceed_max_size_and_multi_text_requests_come_back_in_order():
    enc = FakeEncoder(0.02)

    async def main():
        b = MicroBatcher(enc, max_size=4, max_wait_ms=0)
        await b.start()
        singles = asyncio.gather(*(b.submit([f"s{i}"]) for i in range(10)))
        many = await b.submit(["a", "bb", "ccc", "dddd", "eeeee", "ffffff"])
        await singles
        await b.stop()
        return many

    vecs, truncated = run(main())
    assert vecs[:, 0].tolist() == [1, 2, 3, 4, 5, 6] and truncated == [False] * 5 + [True]
    assert len(set(vecs[:, 1].tolist())) == 1  # the oversized request goes whole, in one pass of its own
    assert enc.batches.count(["a", "bb", "ccc", "dddd", "eeeee", "ffffff"]) == 1
    others = [batch for batch in enc.batches if len(batch) != 6]
    assert sorted(t for batch in others for t in batch) == sorted(f"s{i}" for i in range(10))
    assert max(len(batch) for batch in others) <= 4


def test_follow_up_runs_in_the_encoding_thread_on_its_own_rows():
    enc = FakeEncoder(0.02)

    def then(vecs, truncated):
        if vecs[0, 0] == 3:
            raise KeyError("bad job")
        return threading.current_thread().name, vecs[:, 0].tolist(), truncated

    async def main():
        b = MicroBatcher(enc, max_size=64, max_wait_ms=0)
        await b.start()
        jobs = [b.submit(["aa", "bbbbbbb"], then), b.submit(["ccc"], then), b.submit(["d"], then)]
        out = await asyncio.gather(*jobs, return_exceptions=True)
        await b.stop()
        return out

    first, failed, last = run(main())
    assert first[0].startswith("embedkd-encode") and first[1:] == ([2.0, 7.0], [False, True])
    assert isinstance(failed, KeyError) and last[1:] == ([1.0], [False])  # one job's error stays its own
    assert [len(batch) for batch in enc.batches] == [4]


def test_encoding_runs_off_the_event_loop_and_lone_query_does_not_wait():
    enc = FakeEncoder(0.2)

    async def main():
        b = MicroBatcher(enc, max_size=8, max_wait_ms=5)
        await b.start()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        start = time.perf_counter()
        await b.submit(["lonely"])
        took = time.perf_counter() - start
        task.cancel()
        await b.stop()
        return ticks, took

    ticks, took = run(main())
    assert ticks >= 5  # the loop kept running during the 200 ms "forward pass"
    assert took < 0.2 + 0.1


def test_wait_under_load_is_bounded():
    enc = FakeEncoder(0.0)

    async def main():
        b = MicroBatcher(enc, max_size=64, max_wait_ms=5)
        await b.start()
        await asyncio.gather(*(b.submit([f"{i}"]) for i in range(4)))  # leaves the batcher "under load"
        start = time.perf_counter()
        await b.submit(["alone"])
        took = time.perf_counter() - start
        await b.stop()
        return took

    assert run(main()) < 0.005 + 0.05


def test_errors_reach_every_waiting_request_and_batcher_survives():
    calls = []

    def flaky(texts):
        calls.append(texts)
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return np.ones((len(texts), 2), np.float32), [False] * len(texts)

    async def main():
        b = MicroBatcher(flaky, max_wait_ms=0)
        await b.start()
        with pytest.raises(RuntimeError, match="model exploded"):
            await b.submit(["a"])
        vecs, _ = await b.submit(["b"])
        await b.stop()
        return vecs

    assert run(main()).shape == (1, 2)


def test_rejects_unbounded_wait():
    with pytest.raises(ValueError, match="max_wait_ms <= 5"):
        MicroBatcher(FakeEncoder(), max_wait_ms=50)


class ThreadRecorder(FakeEncoder):
    """A FakeEncoder that also records which thread ran each forward pass."""

    def __init__(self, seconds: float = 0.05, fail_on: str | None = None) -> None:
        super().__init__(seconds)
        self.threads, self.fail_on = [], fail_on

    def __call__(self, texts):
        self.threads.append(threading.current_thread().name)
        if self.fail_on in texts:
            raise RuntimeError("forward pass failed")
        return super().__call__(texts)


def test_a_lone_small_request_on_an_idle_batcher_runs_in_the_loop_thread():
    enc = ThreadRecorder(0.01)

    async def main():
        b = MicroBatcher(enc, max_wait_ms=2, inline_max=1)
        await b.start()
        loop_thread = threading.current_thread().name
        one = await b.submit(["a"], then=lambda vecs, cut: (threading.current_thread().name, vecs))
        two = await b.submit(["bb", "ccc"])  # more texts than inline_max: the encoding thread
        three = await b.submit(["d"])
        await b.stop()
        return loop_thread, one, two, three, b.inline_jobs

    loop_thread, (then_thread, vecs), two, three, inline_jobs = run(main())
    assert enc.threads[0] == loop_thread == then_thread  # forward pass and follow-up, no hand-off
    assert vecs[0, 0] == 1
    assert enc.threads[1].startswith("embedkd-encode") and two[0][:, 0].tolist() == [2, 3]
    assert enc.threads[2] == loop_thread and three[0][0, 0] == 1
    assert inline_jobs == 2


def test_requests_arriving_while_a_batch_is_in_flight_queue_and_share_the_next_pass():
    enc = ThreadRecorder(0.05)

    async def main():
        b = MicroBatcher(enc, max_wait_ms=2, inline_max=1)
        await b.start()
        big = asyncio.create_task(b.submit(["x", "y"]))  # through the encoding thread
        await asyncio.sleep(0.01)  # its forward pass is running
        singles = await asyncio.gather(*(b.submit([f"s{i}"]) for i in range(5)))
        await big
        await b.stop()
        return singles, b.inline_jobs

    singles, inline_jobs = run(main())
    assert inline_jobs == 0  # never inline while the encoder is busy
    assert [len(batch) for batch in enc.batches] == [2, 5]
    assert all(t.startswith("embedkd-encode") for t in enc.threads)
    assert [s[0][0, 0] for s in singles] == [2] * 5


def test_an_inline_forward_pass_that_fails_fails_only_its_request():
    enc = ThreadRecorder(0.0, fail_on="boom")

    async def main():
        b = MicroBatcher(enc, inline_max=1)
        await b.start()
        with pytest.raises(RuntimeError, match="forward pass failed"):
            await b.submit(["boom"])
        after = await b.submit(["ok"])  # still idle, still inline, still working
        await b.stop()
        return after, b.inline_jobs

    after, inline_jobs = run(main())
    assert after[0][0, 0] == 2 and inline_jobs == 2


def test_inline_max_must_not_be_negative():
    with pytest.raises(ValueError, match="inline_max >= 0"):
        MicroBatcher(FakeEncoder(), inline_max=-1)
