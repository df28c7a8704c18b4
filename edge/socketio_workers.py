"""Engine.IO polling sessions across the service's workers, with no sticky balancer and no new server.

Every worker accepts on the one shared HTTP port, so consecutive long-polling requests of one
Engine.IO session land on any worker, while the session lives in the memory of the worker that
answered its handshake.  So:

- **Ids name their owner.**  ``own_session_ids`` makes the Engine.IO server's session ids
  ``<worker id>.<python-engineio's random id>`` (96 random bits: still unguessable).
- **Each worker also serves its Socket.IO app on a private Unix socket**, ``sio-<worker id>.sock``
  in a 0700 directory of the service's user (``SessionRouter.start``: one uvicorn server without
  signal handlers of its own).  It starts with the worker's first Socket.IO request, before that
  request is answered (so before any session of this worker exists), and stops, removing its
  file, in the service's shutdown hook (``stop_worker_sockets``), once the HTTP server drained.
- **A router in front of the app** (``SessionRouter``, the ASGI app of the ``/socket.io`` mount):
  an HTTP request whose ``sid`` names another worker is read (bounded by Engine.IO's own
  ``max_http_buffer_size``), forwarded as it came (method, path, query, headers, body) over the
  owner's socket under one deadline, and the owner's answer relayed byte for byte (status, headers,
  body: compressed or not).  An owner that is gone (no socket, connection refused) gets the request
  answered here, by Engine.IO itself: its 400 for an unknown session, which makes the client
  reconnect.  A WebSocket upgrade whose ``sid`` names another worker (the polling -> websocket
  probe) is refused before it is accepted; Engine.IO clients then stay on polling, with their owner.
  A WebSocket-only connection (no ``sid``) is served where it lands.

Nothing of a request or an answer is logged (frames, events, session ids): only the outcome class.
No BentoML import here.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import re
import socket
import stat
import tempfile
import weakref
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator
from urllib.parse import parse_qs

import httpx
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol  # not the slow-client one (edge.timeouts): the peer is us

log = logging.getLogger("liveness.socketio_workers")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WORKER_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")  # what a sid may name: never a path of its own
# Hop-by-hop headers (RFC 9110 7.6.1) stay on their own hop; httpx writes the forwarded body's length.
REQUEST_DROP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                          b"transfer-encoding", b"upgrade", b"content-length"})
RESPONSE_DROP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding"})
MAX_UNIX_PATH = 107  # sun_path is 108 bytes with its NUL
SOCKET_KEEP_ALIVE_S = 30  # the owner keeps a forwarding connection open longer than the forwarder reuses it
POOL_EXPIRY_S = 5.0
SHUTDOWN_GRACE_S = 5  # a long poll still open at shutdown is cut after this (its client re-polls elsewhere)

_routers: "weakref.WeakSet[SessionRouter]" = weakref.WeakSet()  # this process's, for the service hooks


def own_session_ids(eio_server: Any, worker_id: str) -> None:
    """Make ``eio_server`` (python-engineio 4's ``AsyncServer``) name this worker in every session id."""
    if not WORKER_ID.fullmatch(worker_id):
        raise ValueError(f"a worker id is 1-32 of [A-Za-z0-9_-], not {worker_id!r}")
    random_id = eio_server.generate_id  # base64url of 12 random bytes + a sequence number: no "."

    def generate_id() -> str:
        return f"{worker_id}.{random_id()}"

    eio_server.generate_id = generate_id


def owner_of(query_string: bytes) -> str | None:
    """The worker a request's ``sid`` names; None for a handshake, or a sid that names none."""
    sid = parse_qs(query_string.decode("latin-1")).get("sid")
    if not sid:
        return None
    owner, dot, _ = sid[0].partition(".")
    return owner if dot and WORKER_ID.fullmatch(owner) else None


def default_runtime_dir() -> Path:
    """``<tmp>/liveness-<uid>/sio-<parent pid>``: one directory per ``bentoml serve`` (its workers
    share the parent that spawned them), so two services of one user never reach each other."""
    return Path(tempfile.gettempdir()) / f"liveness-{os.getuid()}" / f"sio-{os.getppid()}"


def private_dir(path: Path) -> None:
    """Create ``path`` 0700, or check that it is a directory of ours that no one else may enter:
    a socket found in it is trusted with the clients' frames."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RuntimeError(f"Socket.IO worker sockets: {path} is not a private directory of this user "
                           f"(a symlink, another owner, or group/other permissions); remove it")


def sweep_dead_services(base: Path, own: Path) -> None:
    """Remove the ``sio-<pid>`` directories in ``base`` of services whose process is gone (a
    SIGKILLed ``bentoml serve`` never removes its own), with the worker sockets left in them."""
    for entry in base.glob("sio-*"):
        pid = entry.name[len("sio-"):]
        if entry == own or not pid.isdigit() or _pid_alive(int(pid)) or not entry.is_dir() or entry.is_symlink():
            continue
        for sock in entry.glob("sio-*.sock"):
            sock.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            entry.rmdir()  # anything else in it: left alone


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _SocketServer(uvicorn.Server):
    """uvicorn on a bound socket, leaving the worker's signal handlers to the worker's own server."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class SessionRouter:
    """The ASGI app in front of one worker's Socket.IO app (module docstring).

    ``worker_id`` must match what the app's session ids carry (``own_session_ids``);
    ``runtime_dir`` holds every worker's socket (None: ``default_runtime_dir()``);
    ``max_body_bytes`` bounds a forwarded request's body (Engine.IO's ``max_http_buffer_size``),
    ``max_answer_bytes`` the owner's answer; ``forward_timeout_s`` is the whole forward's deadline
    (connect, send, the owner's long poll, read): longer than a long poll's ping interval, shorter
    than the service's traffic timeout."""

    def __init__(self, app: ASGIApp, worker_id: str, runtime_dir: Path | None, *, max_body_bytes: int,
                 forward_timeout_s: float, max_answer_bytes: int | None = None) -> None:
        if not WORKER_ID.fullmatch(worker_id):
            raise ValueError(f"a worker id is 1-32 of [A-Za-z0-9_-], not {worker_id!r}")
        self.app = app
        self.worker_id = worker_id
        self.default_dir = runtime_dir is None
        self.runtime_dir = default_runtime_dir() if runtime_dir is None else Path(runtime_dir)
        self.max_body_bytes = max_body_bytes
        self.max_answer_bytes = max_answer_bytes or 4 * max_body_bytes + 1024 * 1024
        self.forward_timeout_s = forward_timeout_s
        self.forwarded = 0  # requests relayed to their owner (tests, operators' debugging)
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._server: _SocketServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._attempted = False  # start is tried once, with the first request
        self._lock: asyncio.Lock | None = None
        _routers.add(self)

    def socket_path(self, worker_id: str) -> Path:
        return self.runtime_dir / f"sio-{worker_id}.sock"

    # -- routing ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._attempted:
            await self._start_once()
        owner = owner_of(scope.get("query_string", b"")) if scope["type"] in ("http", "websocket") else None
        if owner is None or owner == self.worker_id:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            # An upgrade probe of another worker's polling session: refused before it is accepted
            # (uvicorn answers 403), so the client keeps polling, and every poll reaches its owner.
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
        else:
            await self._forward(owner, scope, receive, send)

    async def _forward(self, owner: str, scope: Scope, receive: Receive, send: Send) -> None:
        declared = next((v for k, v in scope.get("headers", []) if k.lower() == b"content-length"), b"0")
        too_long = not declared.isdigit() or int(declared) > self.max_body_bytes  # refused unread
        body = b"" if too_long else await _read_body(receive, self.max_body_bytes)
        if body is None:
            return  # the client went away (or its body timed out: answered by the body deadline)
        if too_long or len(body) > self.max_body_bytes:
            # Engine.IO's answer to a payload over max_http_buffer_size, without sending it on
            await _plain(send, 400, b'"Content too long"')
            return
        path = self.socket_path(owner)
        if self._task is None:  # no socket of ours: the directory was never found private
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            async with asyncio.timeout(self.forward_timeout_s):
                status, headers, answer = await self._relay(path, scope, body)
        except _OwnerGone:
            await self.app(scope, _replay(body, receive), send)  # Engine.IO's own 400: unknown session
            return
        except TimeoutError:
            log.warning("Socket.IO: worker %s did not answer a forwarded request within %g s", owner,
                        self.forward_timeout_s)
            await _plain(send, 504, b'"The worker holding this session did not answer in time"')
            return
        except (httpx.HTTPError, _TooLarge) as exc:
            log.warning("Socket.IO: forwarding to worker %s failed (%s)", owner, type(exc).__name__)
            await _plain(send, 502, b'"The worker holding this session failed"')
            return
        self.forwarded += 1
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def _relay(self, path: Path, scope: Scope, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if not path.exists():
            raise _OwnerGone
        client = self._client(path)
        url = httpx.URL(scheme="http", host="worker", path=scope["path"], query=scope.get("query_string", b""))
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in REQUEST_DROP]
        request = client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError:  # a socket left by a worker that died
            await self._drop_client(path)
            raise _OwnerGone from None
        try:
            chunks, size = [], 0
            async for chunk in response.aiter_raw():  # raw: a gzip'd poll stays gzip'd, as its headers say
                size += len(chunk)
                if size > self.max_answer_bytes:
                    raise _TooLarge
                chunks.append(chunk)
        finally:
            await response.aclose()
        headers_out = [(k, v) for k, v in response.headers.raw if k.lower() not in RESPONSE_DROP]
        return response.status_code, headers_out, b"".join(chunks)

    def _client(self, path: Path) -> httpx.AsyncClient:
        key = str(path)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=key, limits=httpx.Limits(keepalive_expiry=POOL_EXPIRY_S)),
                timeout=None, trust_env=False)  # the forward's one deadline is in _forward
            self._clients[key] = client  # one per live owner: only sockets that exist get one
        return client

    async def _drop_client(self, path: Path) -> None:
        client = self._clients.pop(str(path), None)
        if client is not None:
            await client.aclose()

    # -- this worker's socket --------------------------------------------------------------------

    async def _start_once(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._attempted:
                return
            try:
                await self.start()
            except Exception as exc:  # noqa: BLE001 - the worker serves on; its sessions stay its own
                log.error("Socket.IO: worker %s cannot serve its sessions to the other workers (%s); "
                          "a polling client whose request lands elsewhere gets 400", self.worker_id, exc)

    async def start(self) -> None:
        """Serve the app on this worker's Unix socket (a stale one of a dead process is replaced).
        Raises when the directory is not private or the socket cannot be bound."""
        self._attempted = True
        if self._task is not None:
            return
        if self.default_dir:
            private_dir(self.runtime_dir.parent)
            sweep_dead_services(self.runtime_dir.parent, self.runtime_dir)
        private_dir(self.runtime_dir)
        path = self.socket_path(self.worker_id)
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise RuntimeError(f"Socket.IO worker socket path too long for a Unix socket: {path}")
        self._sweep_stale()
        path.unlink(missing_ok=True)  # left by an earlier process with this id
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False, ws="none",
                                http=H11Protocol, proxy_headers=False, server_header=False, date_header=False,
                                timeout_keep_alive=SOCKET_KEEP_ALIVE_S, timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
        server = _SocketServer(config)
        # its own context: not the first request's (BentoML's request and trace ids)
        task = asyncio.create_task(self._serve(server, sock, path), context=contextvars.Context())
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not server.ready.is_set():
            ready.cancel()
            await task  # raises what stopped it
            raise RuntimeError("Socket.IO worker socket: the server stopped at start")
        self._server, self._task = server, task
        log.info("Socket.IO: worker %s serves its sessions to the other workers on %s", self.worker_id, path)

    async def _serve(self, server: _SocketServer, sock: socket.socket, path: Path) -> None:
        """Serves until ``stop`` (or a cancellation: a test's loop ending), then removes the socket."""
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()
            path.unlink(missing_ok=True)
            if self.default_dir:
                with contextlib.suppress(OSError):
                    self.runtime_dir.rmdir()  # the last worker out removes the service's directory

    async def stop(self) -> None:
        """Stop serving the socket and remove its file; close the connections to other workers."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is not None and task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await task
        for key in list(self._clients):
            await self._drop_client(Path(key))

    def _sweep_stale(self) -> None:
        """Remove the sockets of workers whose process is gone (a crashed worker's restart has a new pid)."""
        for entry in self.runtime_dir.glob("sio-*.sock"):
            pid = entry.name[len("sio-"):-len(".sock")]
            if pid.isdigit() and pid != self.worker_id and not _pid_alive(int(pid)):
                entry.unlink(missing_ok=True)


class _OwnerGone(Exception):
    pass


class _TooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, read until it is complete or over ``limit`` (then ``limit`` + 1 bytes of it
    are returned and the rest is never read); None when the client disconnected first."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        parts.append(chunk[: limit + 1 - size])
        size += len(chunk)
        if size > limit or not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _plain(send: Send, status: int, body: bytes) -> None:
    """An answer in Engine.IO's own form (a JSON string as text/plain)."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def stop_worker_sockets() -> None:
    """Stop every router of this process (the service's shutdown hook)."""
    for router in list(_routers):
        await router.stop()


__all__ = ["SessionRouter", "default_runtime_dir", "own_session_ids", "owner_of", "private_dir",
           "stop_worker_sockets"]
