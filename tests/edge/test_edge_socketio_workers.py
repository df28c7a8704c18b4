"""Socket.IO polling sessions across workers with no sticky balancer (edge/socketio_workers.py).

Two "workers" in this test process: two instances of the ``/socket.io`` app (edge.challenge_socketio,
worker ids ``w1`` and ``w2``), each served by uvicorn on its own loopback TCP port and on its own
Unix socket in one private directory, in front of the real ChallengeService on the real core (fake
backend, fake clock).  A tiny TCP proxy hands each new connection to the next worker in turn, and
python-socketio's own AsyncClient (default transports: polling first, then the upgrade probe)
opens a new connection per request, so consecutive requests really land on different workers, as
the kernel spreads them over BentoML's workers.  Covered: the whole challenge flow over polling
across both workers (upgrade probe refused on the non-owner, polls relayed to the owner), a
websocket-only client served where it lands, the relay's answers on the wire (an owner's events
relayed, an unknown or dead owner -> Engine.IO's 400, an oversized body refused before it is
sent and not charged, an owner that does not answer -> 504 at the forward deadline), the session
ids, and the socket file's life (0600 in a 0700 dir, stale file replaced, removed on stop).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import httpx
import pytest
import socketio
from starlette.applications import Starlette

from edge.challenge_socketio import challenge_socketio_app, challenge_socketio_routes
from edge.socketio_workers import SessionRouter, own_session_ids, owner_of, private_dir, sweep_dead_services
from tests.edge.helpers import b64, jpeg, used
from tests.socketio_helpers import AsyncEvents, challenge_service, serve

FRAME = jpeg()
EVENT_WAIT_S = 60.0  # a guard against a hung test only; every wait ends on an event
EIO = "/socket.io/?EIO=4&transport=polling"


@pytest.fixture
def service(make_core, clock):
    yield from challenge_service(make_core, clock)


@pytest.fixture
def runtime_dir():
    d = Path(tempfile.mkdtemp(prefix="sio-"))  # short: a Unix socket path has 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


class RoundRobin:
    """A TCP proxy that hands every new connection to the next backend port in turn."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.counts = [0] * len(ports)
        self._next = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i, self._next = self._next, (self._next + 1) % len(self.ports)
        self.counts[i] += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.ports[i])
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        for w in self._writers:
            w.close()
        await self.server.wait_closed()


@asynccontextmanager
async def two_workers(svc: Any, clock: Any, runtime_dir: Path) -> AsyncIterator[tuple[list[int], list[SessionRouter]]]:
    """Workers w1 and w2: (their TCP ports, their routers); each starts its Unix socket with its first
    request, as in the service."""
    routers: list[SessionRouter] = []
    ports: list[int] = []
    async with AsyncExitStack() as stack:
        for wid in ("w1", "w2"):
            mount = challenge_socketio_routes(lambda: svc, lambda: None, worker_id=wid, runtime_dir=runtime_dir,
                                              max_frame_bytes=svc.settings.max_image_bytes,
                                              min_frame_interval=0.5, clock=clock)[0]
            router = mount.app
            stack.push_async_callback(router.stop)
            routers.append(router)
            ports.append(await stack.enter_async_context(serve(Starlette(routes=[mount]))))
        yield ports, routers


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def challenge_flow(url: str, key: str, clock: Any, svc: Any, **options: Any) -> str:
    """The seed's flow to its end on the fake clock; returns the transport the client ended on."""
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))  # one connection per request
    client = socketio.AsyncClient(reconnection=False, http_session=http)
    events = AsyncEvents(client, EVENT_WAIT_S)
    try:
        await client.connect(url, auth={"api_key": key}, wait_timeout=EVENT_WAIT_S, **options)
        name, challenge = await events.next()
        assert name == "challenge" and challenge["current_step"] == 1, (name, challenge)
        await client.emit("frame", FRAME)
        name, fb = await events.next()
        assert (name, fb["face_detected"], fb["status"]) == ("feedback", True, "INFO"), (name, fb)
        assert fb["passive_score"] == pytest.approx(0.9, abs=1e-6)
        clock.advance(svc.settings.challenge_step_timeout_s + 1)  # the step times out: the session fails
        await client.emit("frame", b64(FRAME))
        name, failed = await events.next()
        assert (name, failed["status"], failed["verification_failed"]) == ("feedback", "FAIL", True)
        name, result = await events.next()
        assert (name, result["status"], result["session_id"]) == ("result", "FAIL", challenge["session_id"])
        assert result["token"] == result["result_token"]
        transport = client.transport()
        assert (await events.next())[0] == "disconnect"  # the owner ends the session after the result
        return transport
    finally:
        await client.disconnect()
        await http.close()


async def flow_across_two_workers(svc: Any, clock: Any, runtime_dir: Path, key: str,
                                  **options: Any) -> tuple[str, list[int], list[int]]:
    """challenge_flow through the round-robin proxy in front of w1 and w2: (the transport the client
    ended on, the connections the proxy handed to each worker, the requests each worker forwarded)."""
    async with two_workers(svc, clock, runtime_dir) as (ports, routers):
        proxy = RoundRobin(ports)
        url = f"http://127.0.0.1:{await proxy.start()}"
        try:
            transport = await challenge_flow(url, key, clock, svc, **options)
        finally:
            await proxy.stop()
        return transport, proxy.counts, [r.forwarded for r in routers]


# -- the flow across two workers ---------------------------------------------------------------------------


def test_a_polling_client_completes_the_flow_across_two_workers(service, clock, runtime_dir):
    core, svc = service
    key = core.keys.create("app", 5).raw_key
    transport, counts, forwarded = run(flow_across_two_workers(svc, clock, runtime_dir, key))  # polling first
    # The handshake landed on w1 (the proxy's first connection), the upgrade probe on w2 was
    # refused, and the client polled on, each request on the next worker in turn.
    assert transport == "polling"
    assert min(counts) >= 4, counts
    assert forwarded[1] >= 4 and forwarded[0] == 0, forwarded
    assert used(core, "app") == 1  # one unit for the session, however many workers carried it


def test_a_websocket_only_client_is_served_where_it_lands(service, clock, runtime_dir):
    core, svc = service
    key = core.keys.create("app", 5).raw_key
    transport, counts, forwarded = run(flow_across_two_workers(svc, clock, runtime_dir, key, transports=["websocket"]))
    assert transport == "websocket"
    assert counts == [1, 0] and forwarded == [0, 0]
    assert used(core, "app") == 1


# -- the relay on the wire --------------------------------------------------------------------------------


def packets(text: str) -> list[str]:
    return text.split("\x1e")  # Engine.IO 4's payload separator


def test_the_relay_on_the_wire(service, clock, runtime_dir):
    core, svc = service
    key = core.keys.create("app", 5).raw_key

    async def go() -> None:
        async with two_workers(svc, clock, runtime_dir) as (ports, routers):
            w1, w2 = (f"http://127.0.0.1:{p}" for p in ports)
            async with httpx.AsyncClient(timeout=EVENT_WAIT_S) as http:
                r = await http.get(w1 + EIO)
                assert r.status_code == 200, r.text
                sid = json.loads(r.text[1:])["sid"]
                assert sid.startswith("w1.") and owner_of(f"sid={sid}".encode()) == "w1"

                # Socket.IO's CONNECT with the key, then a poll: both through w2, answered by w1
                r = await http.post(f"{w2}{EIO}&sid={sid}", content=b'40{"api_key": "%s"}' % key.encode(),
                                    headers={"Content-Type": "text/plain;charset=UTF-8"})
                assert (r.status_code, r.text) == (200, "OK")
                r = await http.get(f"{w2}{EIO}&sid={sid}")
                assert r.status_code == 200
                got = packets(r.text)
                assert got[0].startswith("40{") and any(p.startswith('42["challenge"') for p in got), got
                assert routers[1].forwarded == 2 and used(core, "app") == 1

                # a poll body over Engine.IO's limit: refused before it reaches the owner, not charged
                big = b"4" + b"x" * (routers[1].max_body_bytes + 1)
                r = await http.post(f"{w2}{EIO}&sid={sid}", content=big)
                assert (r.status_code, r.text) == (400, '"Content too long"')
                assert routers[1].forwarded == 2

                # owners that are not there: no socket, or a socket nobody listens on -> Engine.IO's 400
                dead = socket.socket(socket.AF_UNIX)
                dead.bind(str(runtime_dir / "sio-w8.sock"))
                dead.close()
                for other in ("w9.AAAAAAAAAAAAAAAAAAAA", "w8.AAAAAAAAAAAAAAAAAAAA", "no-dot", "../x.y"):
                    r = await http.get(f"{w1}{EIO}&sid={other}")
                    assert (r.status_code, r.text) == (400, json.dumps(f"Invalid session {other}")), other

            # the upgrade probe of w1's session on w2 is refused before it is accepted ...
            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                    await http.ws_connect(f"{w2}/socket.io/?EIO=4&transport=websocket&sid={sid}")
                assert e.value.status == 403
                # ... and on its owner it is accepted
                async with http.ws_connect(f"{w1}/socket.io/?EIO=4&transport=websocket&sid={sid}") as ws:
                    await ws.send_str("2probe")
                    assert (await ws.receive(timeout=EVENT_WAIT_S)).data == "3probe"
        assert used(core, "app") == 1

    run(go())


def test_an_owner_that_does_not_answer_gets_a_504_at_the_forward_deadline(runtime_dir):
    async def go() -> None:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # reads the request, never answers
            writer.close()

        silent = await asyncio.start_unix_server(hold, path=str(runtime_dir / "sio-w2.sock"))
        app = challenge_socketio_app(lambda: None, lambda: None, worker_id="w1")
        router = SessionRouter(app, "w1", runtime_dir, max_body_bytes=1024, forward_timeout_s=0.5)
        try:
            async with serve(router) as port:
                async with httpx.AsyncClient(timeout=EVENT_WAIT_S) as http:
                    r = await http.get(f"http://127.0.0.1:{port}{EIO}&sid=w2.AAAAAAAAAAAAAAAAAAAA")
            assert r.status_code == 504 and "did not answer" in r.text
            assert (runtime_dir / "sio-w1.sock").exists()  # started by that first request
        finally:
            silent.close()
            await router.stop()

    run(go())


# -- ids and the socket file ----------------------------------------------------------------------------


def test_session_ids_name_their_worker_and_stay_random():
    app = challenge_socketio_app(lambda: None, lambda: None, worker_id="4242")
    ids = {app.engineio_server.eio.generate_id() for _ in range(200)}
    assert len(ids) == 200
    for sid in ids:
        owner, _, rest = sid.partition(".")
        assert owner == "4242" and len(rest) == 20 and "." not in rest
    assert owner_of(b"EIO=4&transport=polling") is None and owner_of(b"sid=abc") is None
    with pytest.raises(ValueError):
        own_session_ids(app.engineio_server.eio, "../etc")


def test_the_socket_file_is_private_replaces_a_stale_one_and_goes_on_stop(runtime_dir):
    async def go() -> None:
        (runtime_dir / "sio-w1.sock").write_bytes(b"stale")
        (runtime_dir / "sio-999999999.sock").write_bytes(b"a dead worker's")  # no such process
        router = challenge_socketio_routes(lambda: None, lambda: None, worker_id="w1", runtime_dir=runtime_dir)[0].app
        await router.start()
        path = runtime_dir / "sio-w1.sock"
        try:
            assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert not (runtime_dir / "sio-999999999.sock").exists()
            async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path))) as http:
                r = await http.get("http://worker" + EIO)
            assert r.status_code == 200 and json.loads(r.text[1:])["sid"].startswith("w1.")
        finally:
            await router.stop()
        assert not path.exists()

    run(go())


def test_a_killed_services_directory_is_removed_by_the_next_one(runtime_dir):
    """A SIGKILLed server leaves its sio-<pid> directory and sockets: the next service's first
    worker removes them; a live service's directory (and anything not ours to remove) stays."""
    dead, live, own = runtime_dir / "sio-999999999", runtime_dir / f"sio-{os.getpid()}", runtime_dir / "sio-1"
    for d in (dead, live, own):
        d.mkdir(mode=0o700)
        (d / "sio-7.sock").write_bytes(b"")
    odd = runtime_dir / "sio-999999998"  # a dead service's directory holding something else: kept
    odd.mkdir(mode=0o700)
    (odd / "notes.txt").write_text("not a socket")
    sweep_dead_services(runtime_dir, own)
    assert not dead.exists()
    assert (live / "sio-7.sock").exists() and (own / "sio-7.sock").exists() and (odd / "notes.txt").exists()


def test_a_directory_others_may_enter_is_refused(runtime_dir):
    os.chmod(runtime_dir, 0o755)
    with pytest.raises(RuntimeError, match="not a private directory"):
        private_dir(runtime_dir)
    (runtime_dir / "sio-w2.sock").write_bytes(b"")  # anyone's, in a directory anyone may write

    async def go() -> None:  # the worker serves on, its sessions its own; it never forwards into it
        router = challenge_socketio_routes(lambda: None, lambda: None, worker_id="w1", runtime_dir=runtime_dir)[0].app
        async with serve(router) as port:
            async with httpx.AsyncClient(timeout=EVENT_WAIT_S) as http:
                assert (await http.get(f"http://127.0.0.1:{port}{EIO}")).status_code == 200
                r = await http.get(f"http://127.0.0.1:{port}{EIO}&sid=w2.AAAAAAAAAAAAAAAAAAAA")
        assert (r.status_code, router.forwarded) == (400, 0)
        assert not (runtime_dir / "sio-w1.sock").exists()
        await router.stop()

    run(go())
    os.chmod(runtime_dir, 0o700)
    private_dir(runtime_dir)
    fresh = runtime_dir / "new"
    private_dir(fresh)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700
