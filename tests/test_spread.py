"""Keep-alive connections are closed every N responses (liveness.api.spread), per connection."""

from __future__ import annotations

import asyncio

from edge.spread import SpreadConnections


async def _app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"keep-alive")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _headers(mw: SpreadConnections, client: tuple[str, int]) -> list[tuple[bytes, bytes]]:
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(mw({"type": "http", "client": client}, receive, send))
    return sent[0]["headers"]


def test_every_nth_response_on_a_connection_closes_it():
    mw = SpreadConnections(_app, every=3)
    a, b = ("10.0.0.1", 5000), ("10.0.0.1", 5001)
    closes = [(b"connection", b"close") in _headers(mw, a) for _ in range(7)]
    assert closes == [False, False, True, False, False, True, False]
    # another connection keeps its own count, and the app's own header is replaced, not doubled
    assert [(b"connection", b"close") in _headers(mw, b) for _ in range(3)] == [False, False, True]
    assert [k for k, _ in _headers(mw, b)].count(b"connection") == 1


def test_disabled_and_non_http_pass_through():
    mw = SpreadConnections(_app, every=0)
    assert all((b"connection", b"close") not in _headers(mw, ("h", 1)) for _ in range(5))
