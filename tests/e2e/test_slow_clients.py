"""Slow clients at the edge (edge/timeouts.py): a request head or body that trickles in gets a
408 and a closed connection, over raw sockets against the served Bento.

The server runs with short timeouts from the environment (LIVENESS_HEADER_TIMEOUT_S,
LIVENESS_BODY_TIMEOUT_S) so each case takes seconds.  The clients drip a byte string until the
server answers or closes: a hang guard bounds every wait, never a speed requirement.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from e2e_conftest import Server, create_key, start_server
from ws_client import WebSocket

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 3
DEADLINE_S = 120.0  # hang guard: a connection still open this long failed the test
DRIP_EVERY_S = 0.2


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # One worker: the WebSocket test relies on both its connections sharing one event loop.
    d: Path = tmp_path_factory.mktemp("slow-clients")
    srv = start_server(d / "keys.sqlite3", d, {
        "LIVENESS_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "LIVENESS_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "LIVENESS_WORKERS": "1",
    })
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Outcome:
    data: bytes  # everything the server sent
    closed: str  # "eof" or "reset"

    @property
    def status(self) -> int:
        return int(self.data.split(b" ", 2)[1])

    @property
    def headers(self) -> dict[str, str]:
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}

    def json(self) -> dict:
        return json.loads(self.data.split(b"\r\n\r\n", 1)[1])


def trickle(sock: socket.socket, first: bytes, drip: bytes) -> Outcome:
    """Send ``first``, then ``drip`` every DRIP_EVERY_S until the server has said something; read
    until it closes.  Fails the test if the connection is still open after DEADLINE_S."""
    sock.settimeout(DRIP_EVERY_S)
    if first:
        sock.sendall(first)
    data = b""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
            if not chunk:
                return Outcome(data, "eof")
            data += chunk
            continue
        except socket.timeout:
            pass
        except ConnectionResetError:
            return Outcome(data, "reset")
        if drip and not data:
            try:
                sock.sendall(drip)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed under us: the reads above tell how
    pytest.fail(f"the server kept a trickling connection open for {DEADLINE_S:.0f} s; got {data[:300]!r}")


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=60)


def assert_408(out: Outcome) -> dict:
    """A 408 JSON answer, then the connection closed (``trickle`` returned: EOF or reset)."""
    assert out.data, f"closed ({out.closed}) without an answer"
    assert out.status == 408, out.data[:300]
    assert out.headers["connection"] == "close"
    assert out.headers["content-type"] == "application/json"
    return out.json()


def assert_native_408(out: Outcome) -> dict:
    body = assert_408(out)
    assert set(body) == {"error", "request_id"}, body
    assert body["error"]["code"] == "request_timeout"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["request_id"], str) and body["request_id"]
    return body


# -- the request head ----------------------------------------------------------------------------


def test_trickled_headers_get_408_and_the_connection_closes(slow):
    with connect(slow) as s:
        out = trickle(s, b"GET /status_check HTTP/1.1\r\nHost: liveness\r\n", b"X-Slow: 1\r\n")
    body = assert_native_408(out)
    assert "headers" in body["error"]["message"]


def test_silent_connection_is_closed_without_an_answer(slow):
    with connect(slow) as s:
        out = trickle(s, b"", b"")
    assert out.data == b"" and out.closed in ("eof", "reset")


def test_next_head_on_a_kept_alive_connection_has_a_deadline_too(slow):
    with connect(slow) as s:
        s.sendall(b"GET /status_check HTTP/1.1\r\nHost: liveness\r\n\r\n")
        first = b""
        while not first.endswith(b"Service is live"):
            chunk = s.recv(65536)
            assert chunk, f"closed after {first!r}"
            first += chunk
        assert first.startswith(b"HTTP/1.1 200 ")
        out = trickle(s, b"GET /status_check HTTP/1.1\r\n", b"X-Slow: 1\r\n")
    assert_native_408(out)


def test_websocket_outlives_the_head_deadline(slow):
    """The deadline stops at the upgrade: a WebSocket opened before a trickled head's deadline
    fired (same worker, same loop) still talks afterwards."""
    with WebSocket(slow.url, "/v1/challenge/ws") as ws:
        with connect(slow) as s:
            assert_native_408(trickle(s, b"GET /health HTTP/1.1\r\n", b"X-Slow: 1\r\n"))
        ws.send_json({})
        event = ws.receive_json()
    assert (event["type"], event["code"]) == ("error", "invalid_request"), event


# -- the request body ----------------------------------------------------------------------------


def test_trickled_body_gets_408_native_envelope(slow):
    head = (b"POST /v1/liveness HTTP/1.1\r\nHost: liveness\r\nContent-Type: image/jpeg\r\n"
            b"X-Request-ID: slow-body-1\r\nContent-Length: 100000\r\n\r\n")
    with connect(slow) as s:
        out = trickle(s, head + b"\xff\xd8", b"x")
    body = assert_native_408(out)
    assert body["request_id"] == "slow-body-1" == out.headers["x-request-id"]
    assert "body" in body["error"]["message"]


def test_trickled_body_on_facias_route_gets_facias_shape(slow):
    head = b"POST /liveness HTTP/1.1\r\nHost: liveness\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    with connect(slow) as s:
        out = trickle(s, head + b'{"hash_id": "', b"x")
    body = assert_408(out)
    assert set(body) == {"error"} and isinstance(body["error"], str), body


def test_trickled_chunked_body_gets_408(slow):
    head = (b"POST /v1/video-liveness HTTP/1.1\r\nHost: liveness\r\nContent-Type: video/mp4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with connect(slow) as s:
        out = trickle(s, head, b"1\r\nx\r\n")
    assert_native_408(out)


def test_complete_requests_are_unaffected(slow, t1_jpeg):
    key = create_key(slow.db_path, 5)
    with httpx.Client(base_url=slow.url, timeout=60) as c:  # one kept-alive connection
        for _ in range(3):
            r = c.get("/status_check")
            assert (r.status_code, r.text) == (200, "Service is live")
        r = c.post("/v1/liveness", content=t1_jpeg, headers={"X-API-Key": key, "content-type": "image/jpeg"})
        assert r.status_code == 200, r.text
        assert r.json()["decision"] in ("live", "spoof")
