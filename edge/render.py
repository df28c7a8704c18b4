"""A ``LivenessError`` (or an answer) on the HTTP wire: one renderer per format.

The native JSON envelope (``render.error``) serves every native endpoint, BentoML API or Starlette
route; FACIA's bodies are ``facia.error_response``'s.  The WebSocket's error event and close code
are ``challenge_ws``'s (``_fail``), gRPC's status codes ``grpc_server``'s (``status_code``).
503s (not_ready, model_unavailable) and the 429s that know when carry ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from edge.facia import error_response as facia_error_response
from liveness.errors import NOT_READY, LivenessError

LOADING = LivenessError(NOT_READY, "Models are loading.")


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


def facia_error(err: LivenessError, ctx: Any = None) -> JSONResponse:
    """FACIA's body and status for the error."""
    status, payload = facia_error_response(err)
    return answer(ctx, status, payload, err.headers())


def not_ready() -> JSONResponse:
    """503 not_ready while this worker's services are loading."""
    return error(LOADING)
