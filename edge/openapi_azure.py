"""The OpenAPI group of the Azure Face liveness routes (edge/azure.py): every path and version it
serves, Azure's request and response shapes, Azure's error body.  edge/openapi.py merges it."""

from __future__ import annotations

from typing import Any

from edge import azure
from edge.openapi import (
    BINARY,
    BOOL,
    INT,
    JSON,
    NUM,
    STR,
    Schema,
    arr,
    body,
    desc,
    multipart,
    nullable,
    obj,
    operation,
    path_param,
    query,
    response,
)
from liveness.sessions.model import DEVICE_ID_MAX, TTL_MAX_S, TTL_MIN_S

TAG = "Azure Face"
# The key in Azure's header (X-API-Key works too, and is what the security scheme names).
SECURITY = [{"ApiKey": []}]
CLIENT_SECURITY = [{"Bearer": []}]
KEY_HEADER = {"name": "Ocp-Apim-Subscription-Key", "in": "header", "required": False, "schema": STR,
              "description": "The API key, where Azure's SDKs send it (`X-API-Key` works too)."}

RECT = obj({"top": INT, "left": INT, "width": INT, "height": INT}, ["top", "left", "width", "height"])
ERROR = obj({"error": obj({"code": STR, "message": STR}, ["code", "message"])}, ["error"],
            description="Azure's error body: Azure's code where one maps (`BadArgument`, `InvalidImage`, "
                        "`InvalidImageSize`, `401`, `403`, `SessionNotFound`, `InternalServerError`), ours otherwise.")
VERIFY_IMAGE = obj({"faceRectangle": RECT, "qualityForRecognition": {"enum": ["high", "medium", "low"]}},
                   ["faceRectangle", "qualityForRecognition"])
RESPONSE_BODY = obj({
    "livenessDecision": {"enum": ["realface", "spoofface", "uncertain"]},
    "target": obj({"faceRectangle": RECT, "fileName": STR, "timeOffsetWithinFile": INT, "imageType": STR},
                  ["faceRectangle", "fileName", "timeOffsetWithinFile", "imageType"]),
    "modelVersionUsed": desc(STR, "The models that decided, `name:version` comma-separated."),
    "verifyResult": obj({"verifyImage": VERIFY_IMAGE, "matchConfidence": NUM, "isIdentical": BOOL},
                        ["matchConfidence", "isIdentical"]),
})
AUDIT_ENTRY = obj({
    "id": INT, "sessionId": STR, "requestId": STR, "clientRequestId": STR, "receivedDateTime": STR,
    "request": obj({"url": STR, "method": STR, "contentLength": INT, "contentType": STR, "userAgent": STR},
                   ["url", "method", "contentType"]),
    "response": obj({"body": {"type": "object", "description": "A `LivenessResponseBody`, or the error body."},
                     "statusCode": INT, "latencyInMilliseconds": INT}, ["body", "statusCode", "latencyInMilliseconds"]),
    "digest": desc(STR, "Upper-case hex sha256 of the capture (empty for an input error)."),
}, ["id", "sessionId", "requestId", "clientRequestId", "receivedDateTime", "request", "response", "digest"])
ITEM_PROPS: dict[str, Schema] = {"id": STR, "createdDateTime": STR, "sessionStartDateTime": STR, "sessionExpired": BOOL,
                                 "deviceCorrelationId": STR, "authTokenTimeToLiveInSeconds": INT}
ITEM = obj(ITEM_PROPS, ["id", "createdDateTime", "sessionExpired"])
SESSION = obj({**ITEM_PROPS, "status": {"enum": ["NotStarted", "Started", "ResultAvailable"]}, "result": AUDIT_ENTRY},
              ["id", "createdDateTime", "sessionExpired", "status"])
CREATED = obj({"sessionId": STR, "authToken": STR, "verifyImage": VERIFY_IMAGE}, ["sessionId", "authToken"])
GA_TARGETS = obj({"color": obj({"faceRectangle": RECT}, ["faceRectangle"])}, ["color"])
GA_ATTEMPT = obj({
    "attemptId": INT, "attemptStatus": {"enum": ["NotStarted", "Running", "Succeeded", "Failed", "Canceled"]},
    "result": obj({"livenessDecision": STR, "targets": GA_TARGETS, "digest": STR,
                   "verifyResult": obj({"matchConfidence": NUM, "isIdentical": BOOL}, ["matchConfidence", "isIdentical"])},
                  ["targets", "digest"]),
    "error": obj({"code": STR, "message": STR, "targets": GA_TARGETS}, ["code", "message", "targets"]),
}, ["attemptId", "attemptStatus"])
GA_SESSION = obj({
    "sessionId": STR, "authToken": STR, "status": {"enum": ["NotStarted", "Running", "Succeeded", "Failed", "Canceled"]},
    "modelVersion": STR,
    "results": obj({"attempts": arr(GA_ATTEMPT),
                    "verifyReferences": arr(obj({"referenceType": STR, "faceRectangle": RECT,
                                                 "qualityForRecognition": STR}, ["faceRectangle"]))}, ["attempts"]),
}, ["sessionId", "authToken", "status", "results"])

CREATE_PROPS: dict[str, Schema] = {
    "livenessOperationMode": desc({"enum": ["Passive", "PassiveActive", "passive", "passiveactive"]},
                                  "Both run our passive pipeline."),
    "deviceCorrelationId": {"type": "string", "minLength": 1, "maxLength": DEVICE_ID_MAX},
    "authTokenTimeToLiveInSeconds": {"type": "integer", "minimum": TTL_MIN_S, "maximum": TTL_MAX_S},
    "sendResultsToClient": BOOL, "enableSessionImage": BOOL,
    "numberOfClientAttemptsAllowed": {"type": "integer", "minimum": 1, "maximum": 10},
    **{name: desc({}, "Accepted, not acted on (docs/COMPATIBILITY.md).") for name in azure.IGNORED},
}
CREATE = obj(CREATE_PROPS, ["livenessOperationMode"])


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): response("Azure's error body.", ERROR) for s in sorted(set(statuses) | {401, 408, 500, 503})}


def _with_404(responses: dict[str, Any]) -> dict[str, Any]:
    out = dict(responses)
    out["404"] = {"description": "`SessionNotFound` (another key's or kind's id too); plain text when no route "
                                 "has the path.",
                  "content": {JSON: {"schema": ERROR}, "text/plain": {"schema": STR}}}
    return out


def azure_routes() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    sid = path_param("session_id", STR, "The session's id.")
    paging = [query("top", {"type": "integer", "minimum": 1, "maximum": 1000}, "At most this many (default 50)."),
              query("start", STR, "Only those after this id (sessions) / entry id (audit).")]

    def create_body(api: azure.Api) -> dict[str, Any]:
        if not api.verify:
            return body({JSON: {"schema": CREATE}})
        fields = {"Parameters": desc(CREATE, "The parameters, a JSON part (the preview SDKs)."),
                  "VerifyImage": desc(BINARY, "The reference face (`verifyImage` works too)."),
                  **{k: desc(STR, "GA v1.2: one part per parameter.") for k in ("livenessOperationMode",)}}
        return body({"multipart/form-data": multipart(fields), JSON: {"schema": CREATE}})

    for version in (*azure.PREVIEW_VERSIONS, azure.GA_VERSION):
        for verify in (False, True):
            api = azure.Api(version, verify)
            op = f"azure_{version.replace('.', '_').replace('-', '_')}_{api.kind}"
            base = f"/face/{version}/{api.kind}-sessions" if api.ga else f"/face/{version}/{api.kind}/singleModal/sessions"
            created = GA_SESSION if api.ga else CREATED
            paths.setdefault(base, {})["post"] = operation(
                f"{op}_create", f"Create an Azure {api.kind} session ({version})",
                {"200": response("The session and the client's authToken.", created), **_errors(400, 403, 422, 429)},
                tags=[TAG], security=SECURITY, parameters=[KEY_HEADER], body=create_body(api),
                description="One quota unit, charged once the parameters (and the reference) proved valid.")
            item = paths.setdefault(f"{base}/{{session_id}}", {})
            item["get"] = operation(
                f"{op}_get", f"An Azure {api.kind} session and its result ({version})",
                _with_404({"200": response("The session.", GA_SESSION if api.ga else SESSION), **_errors()}),
                tags=[TAG], security=SECURITY, parameters=[KEY_HEADER, sid])
            item["delete"] = operation(
                f"{op}_delete", f"Delete an Azure {api.kind} session ({version})",
                _with_404({"200": response("Deleted (an empty body: Azure's SDKs accept only 200)."), **_errors()}),
                tags=[TAG], security=SECURITY, parameters=[KEY_HEADER, sid])
            if not api.ga:
                paths[base]["get"] = operation(
                    f"{op}_list", f"The key's Azure {api.kind} sessions ({version})",
                    {"200": response("Newest first.", arr(ITEM)), **_errors(400)},
                    tags=[TAG], security=SECURITY, parameters=[KEY_HEADER, *paging])
                paths[f"{base}/{{session_id}}/audit"] = {"get": operation(
                    f"{op}_audit", f"The client's calls in an Azure {api.kind} session ({version})",
                    _with_404({"200": response("Oldest first; calls still running are left out.", arr(AUDIT_ENTRY)),
                               **_errors(400)}),
                    tags=[TAG], security=SECURITY, parameters=[KEY_HEADER, sid, *paging])}
            paths[f"/face/{version}/{api.kind}/singleModal"] = {"post": operation(
                f"{op}_client", f"The client's {api.kind} call with the session's authToken ({version})",
                {"200": response("The result (sessions created with `sendResultsToClient`).", RESPONSE_BODY),
                 "204": response("Done; the result is the app server's to read."),
                 **_errors(400, 403, 409, 422, 429)},
                tags=[TAG], security=CLIENT_SECURITY,
                body=body({"multipart/form-data": multipart(
                    {"Content": desc(BINARY, "The capture (JPEG, PNG or WebP)."),
                     "Metadata": desc(nullable(STR), "The mobile SDK's metadata: accepted, not read.")},
                    ["Content"])}),
                description="Scored by the passive pipeline; never charged (the session's creation paid).")}
    return paths
