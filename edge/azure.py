"""Azure AI Face liveness sessions (README "Azure Face liveness (drop-in)"): Azure's paths, names and
shapes over the native session use cases (``liveness.sessions``), so Microsoft's own
``azure-ai-vision-face`` SDK (and an app server written against Azure's REST reference) works by
changing only the endpoint and the key.

* App server: ``/face/{v}/detectLiveness[WithVerify]/singleModal/sessions[/{sessionId}[/audit]]`` for
  the preview versions the SDKs use (``PREVIEW_VERSIONS``), ``/face/v1.2/detectLiveness[WithVerify]-sessions
  [/{sessionId}]`` for GA v1.2.  The key comes in ``Ocp-Apim-Subscription-Key`` (or ``X-API-Key``).
* Client: ``POST /face/{v}/detectLiveness[WithVerify]/singleModal`` with ``Authorization: Bearer
  <authToken>`` and the mobile SDKs' multipart layout (``Content``: the capture, ``Metadata``: opaque),
  scored by the passive pipeline (``flows.passive_attempt``: never charged).

Charges stay in the one admission path: creating a session is ``SessionService.create`` (one unit,
once its parameters and reference proved valid; settled after the answer is sent, as the BentoML
APIs do).  Errors are Azure's ``{"error": {"code", "message"}}`` with Azure's code and status where
one exists (``AZURE_ERRORS``), ours otherwise.  What differs in meaning: docs/COMPATIBILITY.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge import metrics, render
from edge.json_body import parse_object
from edge.multipart import parse_form
from edge.raw_body import read_body
from liveness.admission import settle_after_send
from liveness.errors import (
    INVALID_REQUEST,
    MISSING_API_KEY,
    MISSING_IMAGE,
    SESSION_NOT_FOUND,
    TOKEN_MODE_MISMATCH,
    LivenessError,
)
from liveness.sessions import SessionParams, flows, parse_params
from liveness.tokens import bearer_token

PREVIEW_VERSIONS = ("v1.1-preview.1", "v1.2-preview.1")  # azure-ai-vision-face 1.0.0b2's ``Versions``
GA_VERSION = "v1.2"
LIVENESS, WITH_VERIFY = "detectLiveness", "detectLivenessWithVerify"
CONTENT_PARTS = ("Content", "content")  # the capture the mobile SDKs send
CLIENT_VERIFY_PARTS = ("VerifyImage", "verifyImage")
LIST_TOP_DEFAULT = 50

# Our code -> (Azure's code, Azure's status).  Codes without an Azure counterpart keep ours.
AZURE_ERRORS: dict[str, tuple[str, int]] = {
    "invalid_request": ("BadArgument", 400), "missing_image": ("BadArgument", 400),
    "invalid_base64": ("BadArgument", 400), "empty_image": ("InvalidImage", 400),
    "unsupported_format": ("InvalidImage", 400), "corrupt_image": ("InvalidImage", 400),
    "image_too_small": ("InvalidImageSize", 400), "image_too_large": ("InvalidImageSize", 400),
    "image_too_many_pixels": ("InvalidImageSize", 400),
    "missing_api_key": ("401", 401), "invalid_api_key": ("401", 401),  # Azure's gateway answers these
    "invalid_session_token": ("401", 401), "session_token_expired": ("401", 401),
    "quota_exceeded": ("403", 403),  # Azure: "Out of call volume quota"
    "session_not_found": ("SessionNotFound", 404),
    "internal_error": ("InternalServerError", 500),
}
# Azure's request names -> ours (parse_params validates; its messages are rewritten back).
PARAMS = {
    "deviceCorrelationId": "device_correlation_id", "authTokenTimeToLiveInSeconds": "auth_token_ttl_seconds",
    "sendResultsToClient": "send_results_to_client", "enableSessionImage": "enable_session_image",
    "numberOfClientAttemptsAllowed": "max_attempts",
}
# Accepted and not acted on (docs/COMPATIBILITY.md says why each is safe to ignore).
IGNORED = ("deviceCorrelationIdSetInClient", "livenessSingleModalModel", "livenessModelVersion",
           "returnVerifyImageHash", "verifyConfidenceThreshold", "userCorrelationId",
           "userCorrelationIdSetInClient", "expectedClientIpAddress")


@dataclass(frozen=True)
class Api:
    """One route's coordinates: the API version and the session kind."""

    version: str
    verify: bool

    @property
    def ga(self) -> bool:
        return self.version == GA_VERSION

    @property
    def mode(self) -> str:
        return "passive-verify" if self.verify else "passive"

    @property
    def kind(self) -> str:
        return WITH_VERIFY if self.verify else LIVENESS


# -- errors --------------------------------------------------------------------------------------


def error_response(err: LivenessError, request_id: str | None = None) -> JSONResponse:
    code, status = AZURE_ERRORS.get(err.code, (err.code, err.status))
    response = JSONResponse({"error": {"code": code, "message": err.message}}, status_code=status,
                            headers=err.headers())
    if request_id:
        response.headers["apim-request-id"] = request_id
    return response


def _bad(message: str, field: str | None = None) -> LivenessError:
    return LivenessError(INVALID_REQUEST, message, {"field": field} if field else {})


# -- requests ------------------------------------------------------------------------------------


def api_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get("ocp-apim-subscription-key") or headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def session_params(doc: Mapping[str, Any], api: Api) -> SessionParams:
    """Azure's create body -> our parameters; unknown names are ignored, as Azure does."""
    mode = doc.get("livenessOperationMode")
    if not isinstance(mode, str) or mode.strip().lower() not in ("passive", "passiveactive"):
        raise _bad("'livenessOperationMode' must be 'Passive' or 'PassiveActive'.", "livenessOperationMode")
    native: dict[str, Any] = {"mode": api.mode}
    native.update({ours: doc[theirs] for theirs, ours in PARAMS.items() if doc.get(theirs) is not None})
    try:
        return parse_params(native)
    except LivenessError as err:
        ours = err.details.get("field")
        theirs = next((t for t, o in PARAMS.items() if o == ours), ours)
        raise _bad(err.message.replace(f"'{ours}'", f"'{theirs}'"), theirs) from None


def parse_create(body: bytes, content_type: str, api: Api) -> Callable[[], tuple[SessionParams, bytes | None]]:
    """-> a callable giving the parameters and the reference image (run after the key is checked).
    JSON, or multipart: a ``Parameters`` JSON part (the preview SDKs) or one part per parameter
    (GA), and ``VerifyImage`` / ``verifyImage``."""
    if content_type.split(";")[0].strip().lower() == "multipart/form-data":
        form = parse_form(body, content_type)

        def from_form() -> tuple[SessionParams, bytes | None]:
            part = form.get("Parameters", form.get("parameters"))
            if part is not None:
                doc: Mapping[str, Any] = parse_object(part, empty_ok=False)
            else:
                doc = {k: v.decode("utf-8", "replace") for k, v in form.items() if k not in CLIENT_VERIFY_PARTS}
            image = next((form[p] for p in CLIENT_VERIFY_PARTS if form.get(p)), None)
            return session_params(doc, api), image

        return from_form
    doc = parse_object(body, empty_ok=False)
    return lambda: (session_params(doc, api), None)


def _query_int(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not value.isdigit() or not lo <= int(value) <= hi:
        raise _bad(f"'{name}' must be an integer in {lo}..{hi}.", name)
    return int(value)


# -- answers -------------------------------------------------------------------------------------


def _rectangle(rect: Mapping[str, int] | None) -> dict[str, int]:
    # An attempt without a judged face (an input error) has no box: Azure's shape requires one.
    return dict(rect) if rect else {"top": 0, "left": 0, "width": 0, "height": 0}


def model_version(result: Mapping[str, Any]) -> str:
    """Azure names one model version; ours is the set of models that decided, in one string."""
    return ",".join(f"{m['name']}:{m['version']}" for m in result.get("model_versions", []))


def digest_hex(digest: str | None) -> str:
    """``sha256:<hex>`` -> Azure's upper-case hex of the request's sha256."""
    return (digest or "").split(":", 1)[-1].upper()


def _verify_image(view: Mapping[str, Any]) -> dict[str, Any] | None:
    v = view.get("verify_image")
    if v is None:
        return None
    return {"faceRectangle": _rectangle(v.get("face_rectangle")), "qualityForRecognition": v.get("quality_for_recognition")}


def response_body(result: Mapping[str, Any], file_name: str, verify_image: dict[str, Any] | None) -> dict[str, Any]:
    """A client call's ``LivenessResponseBody`` (preview shape)."""
    out: dict[str, Any] = {
        "livenessDecision": result["decision"],
        "target": {"faceRectangle": _rectangle(result.get("target_face_rectangle")), "fileName": file_name,
                   "timeOffsetWithinFile": 0, "imageType": "Color"},
        "modelVersionUsed": model_version(result),
    }
    vr = result.get("verify_result")
    if vr is not None:
        out["verifyResult"] = {"matchConfidence": vr["match_confidence"], "isIdentical": vr["is_identical"],
                               **({"verifyImage": verify_image} if verify_image else {})}
    return out


def _error_of(error: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    code, status = AZURE_ERRORS.get(error["code"], (error["code"], _status_of(error["code"])))
    return {"error": {"code": code, "message": error["message"]}}, status


def _status_of(code: str) -> int:
    from liveness.errors import CATALOGUE

    return next((k.status for k in CATALOGUE if k.code == code), 500)


def audit_entry(view: Mapping[str, Any], attempt: Mapping[str, Any]) -> dict[str, Any]:
    """One finished attempt as Azure's ``LivenessSessionAuditEntry``."""
    req = attempt.get("request") or {}
    request_id = req.get("request_id") or f"{view['session_id']}.{attempt['attempt_id']}"
    result = attempt.get("result")
    if result is not None:
        body = response_body(result, req.get("file_name", "content"), _verify_image(view))
        status = 200 if view.get("send_results_to_client") else 204
        latency = result.get("latency_ms", 0)
    else:
        body, status = _error_of(attempt["error"])
        latency = attempt.get("latency_ms", 0)
    return {
        "id": attempt["attempt_id"], "sessionId": view["session_id"], "requestId": request_id,
        "clientRequestId": req.get("client_request_id") or request_id, "receivedDateTime": attempt["received_at"],
        "request": {"url": req.get("url", ""), "method": req.get("method", "POST"),
                    "contentLength": req.get("content_length", 0), "contentType": req.get("content_type", ""),
                    "userAgent": req.get("user_agent", "")},
        "response": {"body": body, "statusCode": status, "latencyInMilliseconds": round(latency)},
        "digest": digest_hex((result or {}).get("digest")),
    }


def _finished(view: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [a for a in view.get("attempts", []) if a.get("status") != "running"]


def session_item(view: Mapping[str, Any]) -> dict[str, Any]:
    """Azure's ``LivenessSessionItem`` (preview)."""
    out: dict[str, Any] = {"id": view["session_id"], "createdDateTime": view["created_at"],
                           "sessionExpired": view["session_expired"],
                           "authTokenTimeToLiveInSeconds": view["auth_token_ttl_seconds"]}
    attempts = view.get("attempts") or []
    if attempts:
        out["sessionStartDateTime"] = attempts[0]["received_at"]
    if view.get("device_correlation_id") is not None:
        out["deviceCorrelationId"] = view["device_correlation_id"]
    return out


def preview_session(view: Mapping[str, Any]) -> dict[str, Any]:
    """Azure's ``LivenessSession`` / ``LivenessWithVerifySession`` (preview): ``result`` is the latest
    attempt with a decision, as an audit entry."""
    status = view["status"]
    if status == "Expired":  # Azure says so in ``sessionExpired``; its status names stop at three
        status = "Started" if view.get("attempts") else "NotStarted"
    out = {**session_item(view), "status": status}
    latest = next((a for a in reversed(_finished(view)) if a.get("result")), None)
    if latest is not None:
        out["result"] = audit_entry(view, latest)
    return out


_GA_ATTEMPT = {"running": "Running", "completed": "Succeeded", "failed": "Failed"}


def ga_status(view: Mapping[str, Any]) -> str:
    attempts = view.get("attempts") or []
    if any(a.get("result") for a in attempts):
        return "Succeeded"
    if any(a.get("status") == "running" for a in attempts):
        return "Running"
    if view["session_expired"]:
        return "Failed" if attempts else "Canceled"
    if len(attempts) >= view["max_attempts"]:
        return "Failed"
    return "Running" if attempts else "NotStarted"


def ga_attempt(view: Mapping[str, Any], attempt: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"attemptId": attempt["attempt_id"], "attemptStatus": _GA_ATTEMPT[attempt["status"]]}
    result = attempt.get("result")
    if result is not None:
        out["result"] = {"livenessDecision": result["decision"],
                         "targets": {"color": {"faceRectangle": _rectangle(result.get("target_face_rectangle"))}},
                         "digest": digest_hex(result.get("digest"))}
        vr = result.get("verify_result")
        if vr is not None:
            out["result"]["verifyResult"] = {"matchConfidence": vr["match_confidence"], "isIdentical": vr["is_identical"]}
    elif attempt.get("error") is not None:
        error, _ = _error_of(attempt["error"])
        out["error"] = {**error["error"], "targets": {"color": {"faceRectangle": _rectangle(None)}}}
    return out


def ga_session(view: Mapping[str, Any], auth_token: str, api: Api) -> dict[str, Any]:
    """Azure GA v1.2's ``LivenessSession`` / ``LivenessWithVerifySession``, attempts newest first."""
    attempts = view.get("attempts") or []
    results: dict[str, Any] = {"attempts": [ga_attempt(view, a) for a in reversed(attempts)]}
    if api.verify:
        ref = _verify_image(view)
        results["verifyReferences"] = [{"referenceType": "image", **ref}] if ref else []
    out: dict[str, Any] = {"sessionId": view["session_id"], "authToken": auth_token, "status": ga_status(view),
                           "results": results}
    latest = next((a["result"] for a in reversed(attempts) if a.get("result")), None)
    if latest is not None:
        out["modelVersion"] = model_version(latest)
    return out


# -- routes --------------------------------------------------------------------------------------


def azure_routes(get_sessions: Callable[[], Any], body_limit: Callable[[], int] | None = None) -> list[Route]:
    """Starlette routes for every Azure path and version; ``get_sessions`` -> this worker's
    SessionService (None while it loads: 503).  ``body_limit()``: the largest body a create or a
    client call may send (default: the image routes' limit)."""

    def limit_of(svc: Any) -> int:
        if body_limit is not None:
            return body_limit()
        return svc.settings.max_image_bytes * 4 // 3 + 64 * 1024  # edge.apis.body_limit, base64 and framing

    def guarded(fn: Callable[[Any, Request, str], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            request_id = render.request_id(request.headers.get("x-request-id"))
            svc = get_sessions()
            if svc is None:
                return error_response(render.LOADING, request_id)
            # A unit earned here (a created session) is committed once the answer is on the wire.
            with settle_after_send() as pending:
                try:
                    response = await fn(svc, request, request_id)
                except LivenessError as err:
                    response = error_response(err, request_id)
                except Exception as exc:  # noqa: BLE001 - ours: Azure's envelope, logged without request data
                    render.log_unexpected(request.url.path, exc, request_id)
                    response = error_response(render.UNEXPECTED, request_id)
            render.settle_when_sent(response, pending)
            response.headers["apim-request-id"] = request_id
            return response

        return endpoint

    async def owned(svc: Any, request: Request, api: Api) -> dict[str, Any]:
        """The key's session of this route's kind (another kind's id is 404, as in Azure), with
        its attempts as recorded (``SessionService.audit``)."""
        view = await svc.audit(api_key(request.headers), request.path_params["session_id"])
        if view["mode"] != api.mode:
            raise LivenessError(SESSION_NOT_FOUND, "No such session for this API key.")
        return view

    def create(api: Api) -> Callable[[Request], Awaitable[Response]]:
        async def fn(svc: Any, request: Request, _: str) -> Response:
            key = api_key(request.headers)
            body = await read_body(request, limit_of(svc))
            parsed = parse_create(body, request.headers.get("content-type", ""), api)
            asked: list[Any] = []  # the request's parameters, for the GA answer

            def parse() -> Any:
                params, reference = parsed()
                asked.append(params)
                return params, reference

            created = await svc.create(key, parse)  # parsed once the key is admitted
            if api.ga:
                view = {"session_id": created["session_id"], "attempts": [], "session_expired": False,
                        "max_attempts": asked[0].max_attempts, "verify_image": created.get("verify_image")}
                return JSONResponse(ga_session(view, created["auth_token"], api))
            out: dict[str, Any] = {"sessionId": created["session_id"], "authToken": created["auth_token"]}
            if api.verify and created.get("verify_image") is not None:
                out["verifyImage"] = _verify_image(created)
            return JSONResponse(out)

        return guarded(fn)

    def get(api: Api) -> Callable[[Request], Awaitable[Response]]:
        async def fn(svc: Any, request: Request, _: str) -> Response:
            view = await owned(svc, request, api)
            if not api.ga:
                return JSONResponse(preview_session(view))
            # Azure answers the session's token on every read; ours are not stored, so a fresh one
            # for the same session and expiry (the holder of the API key could create one anyway).
            now = svc.clock()
            token = "" if view["session_expired"] else svc.tokens.session.issue(
                view["session_id"], view["mode"], now, max(1, int(_expires(view) - now)))
            return JSONResponse(ga_session(view, token, api))

        return guarded(fn)

    def delete(api: Api) -> Callable[[Request], Awaitable[Response]]:
        async def fn(svc: Any, request: Request, _: str) -> Response:
            view = await owned(svc, request, api)
            await svc.delete(api_key(request.headers), view["session_id"])
            return Response(status_code=200)  # Azure's SDKs accept only 200

        return guarded(fn)

    def listing(api: Api) -> Callable[[Request], Awaitable[Response]]:
        async def fn(svc: Any, request: Request, _: str) -> Response:
            top = _query_int(request.query_params, "top", LIST_TOP_DEFAULT, 1, 1000)
            start = request.query_params.get("start")
            views = (await svc.list(api_key(request.headers), svc.settings.session_list_max, full=True))["sessions"]
            views = [v for v in views if v["mode"] == api.mode]
            if start:  # Azure pages by "after this id", in the listing's order (ours: newest first)
                ids = [v["session_id"] for v in views]
                views = views[ids.index(start) + 1:] if start in ids else []
            return JSONResponse([session_item(v) for v in views[:top]])

        return guarded(fn)

    def audit(api: Api) -> Callable[[Request], Awaitable[Response]]:
        async def fn(svc: Any, request: Request, _: str) -> Response:
            top = _query_int(request.query_params, "top", LIST_TOP_DEFAULT, 1, 1000)
            start = _query_int(request.query_params, "start", 0, 0, 2**31)
            view = await owned(svc, request, api)
            entries = [audit_entry(view, a) for a in _finished(view) if a["attempt_id"] > start]
            return JSONResponse(entries[:top])

        return guarded(fn)

    def client(api: Api) -> Callable[[Request], Awaitable[Response]]:
        async def fn(svc: Any, request: Request, request_id: str) -> Response:
            token = bearer_token(request.headers.get("authorization"))
            if not token:
                raise LivenessError(MISSING_API_KEY, "Send the session's authToken as 'Authorization: Bearer <authToken>'.")
            body = await read_body(request, limit_of(svc))
            content_type = request.headers.get("content-type", "")
            if content_type.split(";")[0].strip().lower() != "multipart/form-data":
                raise _bad("Send multipart/form-data with the capture in a 'Content' part.")
            form = parse_form(body, content_type)
            if any(p in form for p in CLIENT_VERIFY_PARTS):
                raise _bad("The reference image is sent by the app server when it creates the session, "
                           "not by the client.", "VerifyImage")
            claims = svc.tokens.session.verify(token, svc.clock())
            if claims.mode != api.mode:
                raise LivenessError(TOKEN_MODE_MISMATCH,
                                    f"This session token is for mode '{claims.mode}', not for {api.kind}.",
                                    {"mode": claims.mode})
            content = next((form[p] for p in CONTENT_PARTS if p in form), None)

            def image() -> bytes:
                if not content:
                    raise LivenessError(MISSING_IMAGE, "Send the capture in a multipart part named 'Content'.")
                return content

            audit_request = {
                "request_id": request_id, "url": request.url.path, "method": request.method,
                "content_length": len(body), "content_type": content_type[:200],
                "user_agent": request.headers.get("user-agent", "")[:300],
                "client_request_id": (request.headers.get("x-ms-client-request-id")
                                      or request.headers.get("client-request-id") or "")[:128],
                "file_name": "content",
            }
            out = await flows.passive_attempt(svc, token, image, request=audit_request)
            if out.error is not None:
                metrics.decision("session_azure", out.error.code)
                return error_response(out.error, request_id)
            metrics.decision("session_azure", "live" if out.result.is_live else "spoof")
            if not out.send_results:
                return Response(status_code=204)  # Azure's default: the client learns only that it is done
            return JSONResponse(response_body(out.view["result"], "content", None))

        return guarded(fn)

    routes: list[Route] = []
    for version in PREVIEW_VERSIONS:
        for verify in (False, True):
            api = Api(version, verify)
            base = f"/face/{version}/{api.kind}/singleModal"
            routes += [
                Route(f"{base}/sessions", listing(api), methods=["GET"]),
                Route(f"{base}/sessions", create(api), methods=["POST"]),
                Route(f"{base}/sessions/{{session_id}}", get(api), methods=["GET"]),
                Route(f"{base}/sessions/{{session_id}}", delete(api), methods=["DELETE"]),
                Route(f"{base}/sessions/{{session_id}}/audit", audit(api), methods=["GET"]),
                Route(base, client(api), methods=["POST"]),
            ]
    for verify in (False, True):
        api = Api(GA_VERSION, verify)
        base = f"/face/{GA_VERSION}/{api.kind}-sessions"
        routes += [
            Route(base, create(api), methods=["POST"]),
            Route(f"{base}/{{session_id}}", get(api), methods=["GET"]),
            Route(f"{base}/{{session_id}}", delete(api), methods=["DELETE"]),
            Route(f"/face/{GA_VERSION}/{api.kind}/singleModal", client(api), methods=["POST"]),
        ]
    return routes


def _expires(view: Mapping[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(view["expires_at"].replace("Z", "+00:00")).timestamp()
