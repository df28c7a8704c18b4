"""A small synchronous WebSocket client (wsproto over a socket, both already installed) for the
e2e tests: the served Bento's ``/v1/challenge/ws`` over a real TCP connection."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlparse

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)


class Closed(Exception):
    def __init__(self, code: int, reason: str | None) -> None:
        super().__init__(f"closed {code} {reason or ''}")
        self.code, self.reason = code, reason


class WebSocket:
    def __init__(self, url: str, path: str, timeout: float = 60.0) -> None:
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        self.conn = WSConnection(ConnectionType.CLIENT)
        self._pending: list[Any] = []
        self._text: list[str] = []
        self.sock.sendall(self.conn.send(Request(host=f"{u.hostname}:{u.port}", target=path)))
        event = self._next_event()
        if not isinstance(event, AcceptConnection):
            raise RuntimeError(f"handshake refused: {event!r}")

    def _next_event(self) -> Any:
        while not self._pending:
            data = self.sock.recv(65536)
            self.conn.receive_data(data or None)
            self._pending.extend(self.conn.events())
        return self._pending.pop(0)

    def send_json(self, doc: dict[str, Any]) -> None:
        self.sock.sendall(self.conn.send(TextMessage(data=json.dumps(doc))))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(self.conn.send(BytesMessage(data=data)))

    def receive_json(self) -> dict[str, Any]:
        """The next text message; raises Closed when the server closes instead."""
        while True:
            event = self._next_event()
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return json.loads(text)
            elif isinstance(event, Ping):
                self.sock.sendall(self.conn.send(event.response()))
            elif isinstance(event, CloseConnection):
                try:
                    self.sock.sendall(self.conn.send(event.response()))
                except OSError:
                    pass
                raise Closed(event.code, event.reason)
            elif isinstance(event, RejectConnection):
                raise RuntimeError(f"rejected: {event!r}")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "WebSocket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
