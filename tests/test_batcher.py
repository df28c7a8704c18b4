"""The dynamic batcher: batches form under concurrency, shapes never mix, failures reach callers."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from liveness.inference.batcher import DynamicBatcher


def make(run, **kw):
    seen: list[int] = []
    b = DynamicBatcher(
        "m", run, executor=ThreadPoolExecutor(2), observer=lambda rows, s: seen.append(rows),
        **{"max_batch_size": 8, "max_queue_delay_s": 0.005, **kw},
    )
    return b, seen


def double(x: np.ndarray) -> list[np.ndarray]:
    time.sleep(0.002)
    return [x * 2, x.sum(axis=tuple(range(1, x.ndim)))]


def test_concurrent_requests_are_batched_and_answers_stay_in_order():
    b, seen = make(double)

    async def main():
        xs = [np.full((1, 3), i, np.float32) for i in range(20)]
        outs = await asyncio.gather(*(b.submit(x) for x in xs))
        for i, (y, s) in enumerate(outs):
            assert y.shape == (1, 3) and np.all(y == 2 * i) and s[0] == 3 * i

    asyncio.run(main())
    assert sum(seen) == 20
    assert max(seen) > 1 and max(seen) <= 8


def test_rows_of_different_shapes_are_never_stacked():
    shapes = []

    def run(x):
        shapes.append(x.shape)
        return [x]

    b, _ = make(run)

    async def main():
        xs = [np.zeros((1, 3, 10 + (i % 2), 10), np.float32) for i in range(10)]
        outs = await asyncio.gather(*(b.submit(x) for x in xs))
        assert [o[0].shape for o in outs] == [x.shape for x in xs]

    asyncio.run(main())
    assert {s[2] for s in shapes} == {10, 11}
    assert all(len({s[1:]}) == 1 for s in shapes)


def test_a_request_larger_than_max_batch_is_split():
    b, seen = make(lambda x: [x + 1], max_batch_size=4)
    out = asyncio.run(b.submit(np.arange(10, dtype=np.float32)[:, None]))
    assert out[0][:, 0].tolist() == list(range(1, 11))
    assert max(seen) <= 4


def test_model_failure_reaches_every_caller_and_the_batcher_keeps_working():
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return [x]

    b, _ = make(flaky, max_queue_delay_s=0.05)

    async def main():
        first = await asyncio.gather(*(b.submit(np.zeros((1, 2))) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in first)
        ok = await b.submit(np.ones((1, 2)))
        assert np.all(ok[0] == 1)

    asyncio.run(main())


def test_inflight_limit_is_respected():
    active, peak, calls = [0], [0], [0]
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=60)  # the first two batches meet inside the model

    def run(x):
        with lock:
            active[0] += 1
            calls[0] += 1
            first_two = calls[0] <= 2
            peak[0] = max(peak[0], active[0])
        if first_two:  # was a 10 ms sleep, which a busy machine could outlast before the 2nd began
            both.wait()
        with lock:
            active[0] -= 1
        return [x]

    b, _ = make(run, max_batch_size=1, max_queue_delay_s=0.0, max_inflight=2)

    async def main():
        await asyncio.gather(*(b.submit(np.zeros((1, 1))) for _ in range(8)))

    asyncio.run(main())
    assert peak[0] == 2


@pytest.mark.parametrize("delay", [0.0, 0.002])
def test_lone_request_is_answered(delay):
    b, seen = make(lambda x: [x], max_queue_delay_s=delay)
    out = asyncio.run(b.submit(np.ones((1, 1))))
    assert out[0][0, 0] == 1 and seen == [1]
