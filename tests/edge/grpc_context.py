"""A stand-in for ``grpc.aio.ServicerContext`` (what the servicers use of it) for the gRPC
adapter unit tests: metadata in, initial and trailing metadata out, ``abort`` raising like grpc's,
and the done callbacks that settle a call's unit run by ``end``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Callable

import grpc

from edge import grpc_server as G
from liveness.ports import free_port


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Context:
    """What the servicer uses of a ``grpc.aio.ServicerContext``; ``abort`` raises like grpc's."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = (), remaining: float | None = None) -> None:
        self.metadata = metadata
        self.remaining = remaining
        self.initial: list[tuple[str, str]] | None = None
        self.trailing: dict[str, str] = {}
        self.done_callbacks: list = []
        self.was_cancelled = False

    def add_done_callback(self, callback) -> None:
        self.done_callbacks.append(callback)

    def cancelled(self) -> bool:
        return self.was_cancelled

    async def end(self, cancelled: bool = False) -> None:
        """The call terminates (grpc runs the done callbacks); the settlements they start finish."""
        self.was_cancelled = cancelled
        for callback in self.done_callbacks:
            callback(self)
        await asyncio.gather(*G._SETTLING)

    def invocation_metadata(self):
        return self.metadata

    async def send_initial_metadata(self, md) -> None:
        assert self.initial is None, "initial metadata sent twice"
        self.initial = list(md)

    def set_trailing_metadata(self, md) -> None:
        self.trailing = dict(md)

    def time_remaining(self):
        return self.remaining

    async def abort(self, code, details="", trailing_metadata=()):
        self.trailing = dict(trailing_metadata)
        raise Aborted(code, details)


@contextlib.asynccontextmanager
async def served_channel(core: Any, observe: Callable[[str, str], None]) -> AsyncIterator[grpc.aio.Channel]:
    """The worker's real gRPC server for ``core`` on a free loopback port, and a channel to it."""
    settings = core.settings.model_copy(update={"grpc_host": "127.0.0.1", "grpc_port": free_port()})
    server = await G.start_grpc_server(core, settings, observe=observe)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
            yield channel
    finally:
        await G.stop_grpc_server(server, 0)
