"""Spread keep-alive connections over the worker processes.

Every BentoML worker accepts on one shared listening socket, and a kept-alive connection stays
with the worker that accepted it.  Clients that open their connections at once (a load balancer's
pool, a load test) often all land on one worker while the other idles: measured on 2 cores, 1-8
Locust users put 99-100 % of the work on one worker (docs/PERFORMANCE.md, "Worker split").  So
every ``every``-th response on a connection says ``Connection: close``; the client reconnects, and
the worker whose event loop is least busy tends to win the accept.  The cost is one TCP handshake
per ``every`` requests.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_TRACKED = 50_000  # connections remembered per worker before the counts start over


class SpreadConnections:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], every: int = 100) -> None:
        self.app = app
        self.every = every
        self._counts: dict[tuple[Any, ...], int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or self.every <= 0 or not client:
            await self.app(scope, receive, send)
            return
        key = tuple(client)  # (host, port): one TCP connection
        n = self._counts.pop(key, 0) + 1
        if n < self.every:
            if len(self._counts) >= MAX_TRACKED:
                self._counts.clear()
            self._counts[key] = n
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)
