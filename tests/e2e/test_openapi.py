"""The served OpenAPI document (``GET /docs.json``, edge/openapi.py) against the served Bento,
checked by schemathesis: every operation gets up to ``MAX_EXAMPLES`` generated requests
(deterministic: ``derandomize``, no deadline, no example database; one test per operation) and every answer must be no
5xx, a documented status, a documented content type, a body matching that status's schema, and
the documented headers (X-Request-ID, Retry-After).

Generated values are rarely a face or a real session, so two thirds of the cases (a deterministic
share) are pointed at live objects first: the dev selfie (or video) in the operation's face
field, a real API key as FACIA's ``hash_id``, a real challenge session id on ``/process``,
``/complete`` and ``/status/{id}``, a real app-server session id on its reads, and on
``/v1/liveness``, ``/v1/video-liveness`` and ``/start`` half of those carry an app-server
session's token instead of the API key (the session-client answers and envelopes).  The admin key is configured and sent
with every request, so the admin routes run too (on this test's own server).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any, Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from e2e_conftest import MEDIA, T1, Server, b64, create_key, read_bytes, start_server
from edge import openapi

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 15
VIDEO = MEDIA / "videos" / "jomariya_real_1.mp4"
ADMIN_KEY = "lka_e2e-openapi-admin-key-0123456789"
ENV = {
    "LIVENESS_ADMIN_KEY_SHA256": hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
    # Generated /start cases open sessions by the dozen; the per-key caps must not refuse ours.
    "LIVENESS_CHALLENGE_MAX_SESSIONS_PER_KEY": "100000",
    "LIVENESS_CHALLENGE_SESSIONS_PER_KEY_PER_MINUTE": "100000",
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]

# Raw video bodies: schemathesis has samples for image types only.  Empty, a truncated MP4 and
# WebM head, a GIF head, and text: every refusal the video route has before decoding.
VIDEO_BODIES = st.sampled_from([
    b"", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", b"\x1aE\xdf\xa3\x9fB\x86\x81\x01",
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00", b"not a video",
])
for _media_type in ("video/mp4", "video/quicktime", "video/3gpp", "video/3gpp2", "video/webm"):
    schemathesis.openapi.media_type(_media_type, VIDEO_BODIES)


class Api:
    """The server, its key, and live objects to point cases at."""

    def __init__(self, server: Server, key: str) -> None:
        self.server = server
        self.key = key
        self.http = httpx.Client(base_url=server.url, timeout=60.0, headers={"X-API-Key": key})

    def challenge_session(self) -> str:
        r = self.http.post("/start", json={})
        assert r.status_code == 200, r.text
        return r.json()["session_id"]

    def app_session(self, mode: str = "passive", send_results: bool = False) -> dict[str, Any]:
        r = self.http.post("/v1/sessions", json={"mode": mode, "send_results_to_client": send_results})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    d = tmp_path_factory.mktemp("openapi")
    db = d / "keys.sqlite3"
    key = create_key(db, 1_000_000)
    srv = start_server(db, d, ENV)
    api = Api(srv, key)
    try:
        yield api
    finally:
        api.http.close()
        srv.stop()


# The document as edge/openapi.py builds it (collection needs it before any server runs);
# test_served_document_is_ours checks that the server serves exactly this one.
schema = schemathesis.openapi.from_dict(openapi.document())
# Credentials are ours (``prepare``), never generated: a random X-API-Key would shadow a session token.
schema.config.generation.update(with_security_parameters=False)

TOKEN_MODES = {"/v1/liveness": "passive", "/v1/video-liveness": "video", "/start": "challenge"}
# The body fields that carry a face, per operation (real media makes the success answers happen).
FACE_FIELDS = {"/liveness": ("selfie_image",), "/v1/liveness": ("image",), "/process": ("image",),
               "/v1/verify": ("image1", "image2"), "/v1/sessions": ("verify_image",)}


def _share(case: Any, n: int) -> int:
    """A deterministic bucket 0..n-1 of the case (its generated data, not the run)."""
    data = repr((case.path_parameters, case.query, case.body)).encode("utf-8", "surrogatepass")
    return zlib.crc32(data) % n


def _real_media(case: Any) -> None:
    """Put the dev selfie (or the dev video) where the operation takes its face."""
    path, multipart = case.operation.path, (case.media_type or "").startswith("multipart/")
    if path == "/v1/video-liveness":
        video = read_bytes(VIDEO)
        if isinstance(case.body, dict):
            case.body["video"] = video
        else:
            case.body = video
        return
    image = read_bytes(T1)
    if not isinstance(case.body, dict):
        if path == "/v1/liveness":
            case.body = image  # a raw body
        return
    for name in FACE_FIELDS[path]:
        case.body[name] = image if multipart else b64(image)
    if path == "/v1/sessions":  # a reference image needs a *-verify mode
        if multipart:
            case.body["parameters"] = json.dumps({"mode": "passive-verify"})
        else:
            case.body["mode"] = "passive-verify"


def prepare(case: Any, api: Api) -> dict[str, str]:
    """Point two thirds of the cases at live objects and real media; -> the credential headers."""
    headers = {"X-API-Key": api.key, "X-Admin-Key": ADMIN_KEY}
    path, bucket = case.operation.path, _share(case, 3)
    if bucket == 0:
        return headers  # the generated request as it is
    if path in FACE_FIELDS or path == "/v1/video-liveness":
        _real_media(case)
    if path == "/liveness" and isinstance(case.body, dict):
        case.body["hash_id"] = api.key
    elif path in ("/process", "/complete") and isinstance(case.body, dict):
        case.body["session_id"] = api.challenge_session()
    elif path == "/status/{session_id}":
        case.path_parameters["session_id"] = api.challenge_session()
    elif path.startswith("/v1/sessions/{session_id}"):
        case.path_parameters["session_id"] = api.app_session()["session_id"]
    if path in TOKEN_MODES and bucket == 1:
        token = api.app_session(TOKEN_MODES[path], send_results=_share(case, 2) == 1)["auth_token"]
        if path == "/start" and isinstance(case.body, dict):
            case.body.pop("challenges", None)  # a session token cannot choose challenges
        headers = {"Authorization": f"Bearer {token}"}
    return headers


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_answers_conform_to_the_document(case: Any, api: Api) -> None:
    case.call_and_validate(base_url=api.server.url, headers=prepare(case, api), checks=CHECKS)


def test_served_document_is_ours(api: Api) -> None:
    """edge/openapi.py's document, not BentoML's generated one; every POST body has a real media type."""
    doc = api.http.get("/docs.json").json()
    assert doc == openapi.document()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["components"]["securitySchemes"]) >= {"ApiKey", "Bearer", "AdminKey"}
    for path in ("/liveness", "/v1/liveness", "/v1/video-liveness", "/start", "/process", "/complete",
                 "/v1/sessions", "/v1/verify"):
        media = set(doc["paths"][path]["post"]["requestBody"]["content"])
        assert "text/plain" not in media and media, (path, media)
    ui = api.http.get("/docs")
    assert ui.status_code == 200 and "swagger-ui" in ui.text and "googletagmanager" not in ui.text
