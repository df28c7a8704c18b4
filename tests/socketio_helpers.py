"""Shared python-socketio client plumbing for the Socket.IO tests (edge and e2e): the seed's events
as a client receives them, for the asyncio client and the threaded one, and uvicorn serving an
ASGI app on a loopback port in the test's event loop."""

from __future__ import annotations

import asyncio
import queue
import socket
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterator

import socketio
import uvicorn

from liveness.challenges.service import ChallengeService

EVENTS = ("challenge", "feedback", "result", "error", "disconnect")  # the seed's events, and the end


class _Recorded:
    """Puts every event the client receives, in order, as (name, data) into a queue."""

    def __init__(self, client: socketio.Client | socketio.AsyncClient, events: Any, wait_s: float) -> None:
        self.events = events
        self.wait_s = wait_s  # a guard against a hung test only; every wait ends on an event
        for name in EVENTS:
            client.on(name, self._record(name))

    def _record(self, name: str) -> Callable[..., None]:
        # a plain function: socketio.Client runs it on its own thread, socketio.AsyncClient in the loop
        def record(data: Any = None) -> None:
            self.events.put_nowait((name, data))
        return record


class AsyncEvents(_Recorded):
    """The events of a ``socketio.AsyncClient``; ``await next()`` waits for the next one."""

    def __init__(self, client: socketio.AsyncClient, wait_s: float) -> None:
        super().__init__(client, asyncio.Queue(), wait_s)

    async def next(self) -> tuple[str, Any]:
        return await asyncio.wait_for(self.events.get(), self.wait_s)


class Events(_Recorded):
    """The events of a ``socketio.Client`` (handlers run on its thread); ``next()`` waits for the next one."""

    def __init__(self, client: socketio.Client, wait_s: float) -> None:
        super().__init__(client, queue.Queue(), wait_s)

    def next(self) -> tuple[str, Any]:
        return self.events.get(timeout=self.wait_s)


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[int]:
    """``app`` served by uvicorn (wsproto websockets) on a loopback port in this loop; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="wsproto"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


def challenge_service(make_core: Callable[..., Any], clock: Any) -> Iterator[tuple[Any, ChallengeService]]:
    """For a fixture to ``yield from``: (core, ChallengeService) on a core of two steps from blink and
    look_center, on the fake clock; closed after the test."""
    core = make_core(challenge_steps=2, challenge_pool=("blink", "look_center"))
    svc = ChallengeService(core, core.settings, measure=False, clock=clock)
    yield core, svc
    svc.close()
