"""Admin API for model rollouts (``/v1/admin/...``), protected by the admin key.

The same operations as ``liveness models ...``; here the worker that takes the call also loads
and warms the version at once, and every other worker follows within its refresh interval.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edge import render
from edge.credentials import authorise_admin
from edge.json_body import parse_object
from liveness.errors import INVALID_REQUEST, ROLLOUT_REJECTED, UNKNOWN_MODEL, LivenessError
from liveness.rollout.manager import RolloutError

log = logging.getLogger("liveness.admin")

AppGetter = Callable[[], Any]  # -> LivenessApp of this worker (or None while loading)


async def _body(request: Request) -> dict[str, Any]:
    return parse_object(await request.body())


def _int(doc: dict[str, Any], key: str) -> int:
    """``doc[key]`` as an integer: a JSON integer, or a string of decimal digits ("3").  A float
    (1.9), a boolean or anything else is refused: ``int()`` would truncate 1.9 and true to 1."""
    value = doc.get(key)
    if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise LivenessError(INVALID_REQUEST, f"'{key}' (an integer) is required.")


def _percent(doc: dict[str, Any]) -> float:
    """``doc["percent"]``: a JSON number or a numeric string, never a boolean (true would be 1 %)."""
    value = doc.get("percent")
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise LivenessError(INVALID_REQUEST, "'percent' (0..100) is required.") from None


def _states(app: Any) -> list[dict[str, Any]]:
    loaded = {m: app.backend.loaded_versions(m) for m in app.models}
    out = []
    for st in app.book.states().values():
        r = app.routing.router.table.get(st.model, st.resolved)
        out.append({
            "model": st.model, "versions_on_disk": st.on_disk, "loaded_here": loaded[st.model],
            "policy": st.policy.as_dict(), "serving": r.stable, "candidate": r.candidate, "mode": r.mode,
            "percent": r.percent, "previous": st.previous,
        })
    return out


def admin_routes(get_app: AppGetter, admin_key_sha256: Callable[[], str | None]) -> list[Route]:
    def endpoint(fn: Callable[[Any, Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def handle(request: Request) -> JSONResponse:
            try:
                authorise_admin(request.headers, admin_key_sha256())
                app = get_app()
                if app is None:
                    return render.not_ready()
                model = request.path_params.get("model")
                if model is not None and model not in app.models:
                    raise LivenessError(UNKNOWN_MODEL, f"Unknown model {model!r}; known: {', '.join(app.models)}.")
                return JSONResponse(await fn(app, request))
            except LivenessError as e:
                return render.error(e)
            except RolloutError as e:
                return render.error(LivenessError(ROLLOUT_REJECTED, str(e)))
            except Exception as exc:  # noqa: BLE001 - ours (a locked policy store, a bug): the envelope, logged
                request_id = render.request_id(request.headers.get("x-request-id"))
                render.log_unexpected(request.url.path, exc, request_id, logger=log)
                response = render.error(render.UNEXPECTED, request_id=request_id)
                response.headers["x-request-id"] = request_id
                return response

        return handle

    async def list_models(app: Any, request: Request) -> Any:
        return {"models": await asyncio.to_thread(_states, app)}

    async def load(app: Any, request: Request) -> Any:
        model, version = request.path_params["model"], _int(await _body(request), "version")
        v = await asyncio.to_thread(app.book.validate, model, version)
        await app.backend.load(model, version)
        return {"loaded": asdict(v)}

    async def promote(app: Any, request: Request) -> Any:
        model, version = request.path_params["model"], _int(await _body(request), "version")
        await asyncio.to_thread(app.book.promote, model, version)
        await app.routing.refresh(force=True)
        return {"models": await asyncio.to_thread(_states, app)}

    async def rollback(app: Any, request: Request) -> Any:
        await asyncio.to_thread(app.book.rollback, request.path_params["model"])
        await app.routing.refresh(force=True)
        return {"models": await asyncio.to_thread(_states, app)}

    def experiment(mode: str) -> Callable[[Any, Request], Awaitable[Any]]:
        async def run(app: Any, request: Request) -> Any:
            doc = await _body(request)
            percent = _percent(doc)
            await asyncio.to_thread(app.book.experiment, request.path_params["model"], mode, _int(doc, "version"), percent)
            await app.routing.refresh(force=True)
            return {"models": await asyncio.to_thread(_states, app)}

        return run

    async def shadow_report(app: Any, request: Request) -> Any:
        stats = await asyncio.to_thread(app.policy_store.shadow_stats)
        return {"shadow": [{**asdict(s), "agreement": s.agreement} for s in stats]}

    base = "/v1/admin"
    return [
        Route(f"{base}/models", endpoint(list_models), methods=["GET"]),
        Route(f"{base}/models/{{model}}/load", endpoint(load), methods=["POST"]),
        Route(f"{base}/models/{{model}}/promote", endpoint(promote), methods=["POST"]),
        Route(f"{base}/models/{{model}}/rollback", endpoint(rollback), methods=["POST"]),
        Route(f"{base}/models/{{model}}/canary", endpoint(experiment("canary")), methods=["POST"]),
        Route(f"{base}/models/{{model}}/shadow", endpoint(experiment("shadow")), methods=["POST"]),
        Route(f"{base}/shadow-report", endpoint(shadow_report), methods=["GET"]),
    ]
