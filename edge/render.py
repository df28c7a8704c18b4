"""A ``LivenessError`` (or an answer) on the HTTP wire: one renderer per format.

The native JSON envelope (``render.error``) serves every native endpoint, BentoML API or Starlette
route; FACIA's bodies are ``facia.error_response``'s.  The WebSocket's error event and close code
are ``challenge_ws``'s (``_fail``), gRPC's status codes ``grpc_server``'s (``status_code``).
503s (not_ready, model_unavailable) and the 429s that know when carry ``Retry-After``.

Our own failures (an exception that is not a ``LivenessError``) become ``internal_error``
(``UNEXPECTED``) and are logged by ``log_unexpected``: the traceback and the exception's type,
never its text (which may quote a request body or an image), except for the store's and the
OS's errors, whose text describes the server.  Every edge adapter (the BentoML APIs, gRPC, the
challenge WebSocket) reports them the same way.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import traceback
import uuid
from typing import Any, Awaitable, Callable

from starlette.background import BackgroundTasks
from starlette.responses import JSONResponse, Response

from edge.facia import error_response as facia_error_response
from liveness.errors import INTERNAL_ERROR, NOT_READY, LivenessError

log = logging.getLogger("liveness.edge")

LOADING = LivenessError(NOT_READY, "Models are loading.")
UNEXPECTED = LivenessError(INTERNAL_ERROR, "The request failed on the server.")

# A client's X-Request-ID is echoed (in headers, bodies and logs) only when it is a short token
# of a safe charset; anything else is replaced by a generated id.
REQUEST_ID_MAX = 128
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,%d}" % REQUEST_ID_MAX)
# Exceptions whose text describes the server (a locked database, a full disk), not the request.
_SERVER_SIDE = (sqlite3.Error, OSError)
_SERVER_SIDE_MODULES = ("sqlite3", "pymongo", "bson")
_TEXT_MAX = 300


def request_id(sent: str | None) -> str:
    """The client's request id when it is 1-128 characters of ``[A-Za-z0-9._:-]``, else a new one."""
    if sent and _REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def job_id() -> str:
    """A BWS/gRPC call's ``jobid``: a GUID in its usual dashed form, as BWS sends it."""
    return str(uuid.uuid4())


def log_unexpected(where: str, exc: BaseException, request_id: str | None = None, logger: logging.Logger = log) -> None:
    """Log our failure ``exc`` in ``where`` (an endpoint, an RPC): type and traceback, and the
    text only of server-side errors (``_SERVER_SIDE``), so no request data reaches the log."""
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    server_side = isinstance(exc, _SERVER_SIDE) or type(exc).__module__.split(".")[0] in _SERVER_SIDE_MODULES
    text = f": {str(exc)[:_TEXT_MAX]}" if server_side else ""
    stack = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    cause, depth = exc.__cause__ or exc.__context__, 0
    while cause is not None and depth < 5:  # the chain's types and frames too, never its texts
        frames = "".join(traceback.format_tb(cause.__traceback__)).rstrip()
        stack = f"{frames}\n  (while handling {type(cause).__module__}.{type(cause).__qualname__})\n{stack}"
        cause, depth = cause.__cause__ or cause.__context__, depth + 1
    logger.error("unexpected %s in %s (request_id %s)%s\nTraceback (most recent call last):\n%s",
              name, where, request_id or "-", text, stack)


def answer(ctx: Any, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON answer.  From a BentoML API (``ctx`` its bentoml.Context): a ready response skips
    BentoML's pydantic round trip of the output (6% of GIL time); BentoML still applies ctx's
    status (so it is set here) and headers to it."""
    if ctx is not None:
        ctx.response.status_code = status
    return JSONResponse(payload, status_code=status, headers=headers)


def error(err: LivenessError, ctx: Any = None, **extra: Any) -> JSONResponse:
    """The native envelope ``{"error": {"code", "message", "details"?}, **extra}`` with the error's status."""
    return answer(ctx, err.status, {**err.envelope(), **extra}, err.headers())


def facia_error(err: LivenessError, ctx: Any = None, **extra: Any) -> JSONResponse:
    """FACIA's body and status for the error (plus ``extra``, e.g. an internal error's request_id)."""
    status, payload = facia_error_response(err)
    return answer(ctx, status, {**payload, **extra}, err.headers())


def not_ready() -> JSONResponse:
    """503 not_ready while this worker's services are loading."""
    return error(LOADING)


def settle_when_sent(response: Response, pending: list[Callable[[], Awaitable[None]]]) -> Response:
    """``response`` with the request's pending settlements (liveness.admission
    ``settle_after_send``) run after it has been written to the socket, behind its own background
    work: a unit is committed only for an answer that was sent."""
    if pending:
        tasks = BackgroundTasks([response.background] if response.background is not None else [])
        for settle in pending:
            tasks.add_task(settle)
        response.background = tasks
    return response
