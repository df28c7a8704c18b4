"""An asyncio dynamic batcher with Triton's semantics.

Requests are queued; a batch is dispatched when it reaches ``max_batch_size`` rows or when the
oldest request has waited ``max_queue_delay``.  Only inputs with the same per-row shape are
stacked (detector inputs vary in size).  The model itself runs in a thread: ONNX Runtime
releases the GIL, so the event loop keeps accepting and decoding requests meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

import numpy as np

RunFn = Callable[[np.ndarray], list[np.ndarray]]
BatchObserver = Callable[[str, int, int, float], None]  # model, version, batch rows, seconds in the model


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    enqueued: float


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        run: RunFn,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        executor: Executor,
        max_inflight: int = 1,
        observer: Callable[[int, float], None] | None = None,  # rows, seconds
    ) -> None:
        self.name = name
        self._run = run
        self._max_rows = max(1, max_batch_size)
        self._delay = max(0.0, max_queue_delay_s)
        self._executor = executor
        self._observer = observer
        self._max_inflight = max_inflight
        self._pending: list[_Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the model on ``x`` (rows = leading dim) as part of some batch; returns its rows."""
        if x.shape[0] > self._max_rows:  # larger than any batch: split, keep order
            parts = [await self.submit(x[i : i + self._max_rows]) for i in range(0, x.shape[0], self._max_rows)]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(self._max_inflight)
            self._task = loop.create_task(self._dispatch_loop(), name=f"batcher-{self.name}")
        fut = loop.create_future()
        self._pending.append(_Pending(x, fut, time.monotonic()))
        assert self._wakeup is not None
        self._wakeup.set()
        return await fut

    def _take(self) -> list[_Pending]:
        """The oldest request plus later ones of the same row shape, up to max_batch_size rows."""
        shape = self._pending[0].x.shape[1:]
        taken, rest, rows = [], [], 0
        for p in self._pending:
            if p.x.shape[1:] == shape and rows + p.x.shape[0] <= self._max_rows:
                taken.append(p)
                rows += p.x.shape[0]
            else:
                rest.append(p)
        self._pending = rest
        return taken

    def _ready_rows(self) -> int:
        shape = self._pending[0].x.shape[1:]
        return sum(p.x.shape[0] for p in self._pending if p.x.shape[1:] == shape)

    async def _dispatch_loop(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._pending[0].enqueued + self._delay
            while self._ready_rows() < self._max_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            await self._slots.acquire()
            batch = [p for p in self._take() if not p.future.cancelled()]
            if not batch:
                self._slots.release()
                continue
            asyncio.get_running_loop().create_task(self._execute(batch))

    async def _execute(self, batch: list[_Pending]) -> None:
        assert self._slots is not None
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
            t0 = time.perf_counter()
            outs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, x)
            if self._observer is not None:
                self._observer(int(x.shape[0]), time.perf_counter() - t0)
            start = 0
            for p in batch:
                n = p.x.shape[0]
                if not p.future.done():
                    p.future.set_result([o[start : start + n] for o in outs])
                start += n
        except BaseException as e:  # surface model failures to every waiting request
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
        finally:
            self._slots.release()
