"""Hostile bodies and our own failures across every BentoML API adapter (edge/apis.py): JSON
nested past the edge's one parser's limit (edge/json_body.py) is ``400 invalid_request`` on every
route (FACIA's 400 body on ``/liveness``), never a 500; an unexpected exception below an adapter
(a locked key store) is ``500 internal_error`` in the route's format with a request_id, counted,
and charges nothing.  The real core, ChallengeService and SessionService on the fake backend."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3

import pytest

from edge import apis
from liveness.challenges.service import ChallengeService
from liveness.sessions import SessionService
from tests.edge.helpers import Svc, b64, body_of, ctx, jpeg, used

DEEP_ARRAY = b"[" * 1000 + b"]" * 1000  # ~2 KB, 1,000 levels: Python's parser used to recurse out
DEEP_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000
DEEP_INSIDE = b'{"session_id": "s", "image": "AAAA", "x": ' + DEEP_ARRAY + b"}"
PACKED = b"[" + b"[]," * 12_000 + b"[]]"  # shallow, but 12,001 containers: a memory bomb at scale

NATIVE_ROUTES = {
    "/v1/liveness": apis.native_liveness, "/start": apis.challenge_start, "/process": apis.challenge_process,
    "/complete": apis.challenge_complete, "/v1/sessions": apis.create_session, "/v1/verify": apis.verify,
}
ALL_ROUTES = {**NATIVE_ROUTES, "/liveness": apis.facia_liveness, "/v1/video-liveness": apis.video_liveness}
FACIA_CORRUPT = {"error": "Invalid or corrupt selfie image. Images must be in PNG, JPG, or JPEG format."}


@pytest.fixture
def svc(make_core, clock):
    core = make_core(verification_enabled=True)
    challenges = ChallengeService(core, core.settings, measure=False, clock=clock)
    sessions = SessionService(core, core.settings, challenges=challenges, clock=clock)
    yield Svc(core, challenges=challenges, sessions=sessions)
    sessions.close()
    challenges.close()


def call(svc: Svc, path: str, body: bytes, headers: dict[str, str] | None = None,
         content_type: str = "application/json") -> tuple[int, dict, object]:
    c = ctx(headers, content_type=content_type, path=path)
    r = asyncio.run(ALL_ROUTES[path](svc, body, c))
    assert r.status_code == c.response.status_code
    return r.status_code, body_of(r), c


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT, DEEP_INSIDE], ids=["array", "object", "inside"])
@pytest.mark.parametrize("path", list(NATIVE_ROUTES))
def test_deep_json_is_400_invalid_request_on_every_native_route(svc, path, body):
    key = svc.core.keys.create("k", 5).raw_key
    status, doc, _ = call(svc, path, body, {"X-API-Key": key})
    assert (status, doc["error"]["code"], doc["error"]["details"]) == (400, "invalid_request", {"max_depth": 32})
    assert doc["error"]["message"] == "The JSON body is nested too deeply (the limit is 32 levels)."
    assert used(svc.core, "k") == 0


@pytest.mark.parametrize("path", list(NATIVE_ROUTES))
def test_a_packed_json_body_is_400_invalid_request_on_every_native_route(svc, path):
    status, doc, _ = call(svc, path, PACKED, {"X-API-Key": "lk_any"})
    assert (status, doc["error"]["code"], doc["error"]["details"]) == (400, "invalid_request", {"max_containers": 10_000})


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=B"])
@pytest.mark.parametrize("path", ["/v1/sessions"])
def test_deep_json_in_a_multipart_parameters_part_is_400(svc, path, content_type):
    body = (b'--B\r\nContent-Disposition: form-data; name="parameters"\r\n\r\n' + DEEP_OBJECT + b"\r\n--B--\r\n")
    key = svc.core.keys.create("k", 5).raw_key
    status, doc, _ = call(svc, path, body, {"X-API-Key": key}, content_type)
    assert (status, doc["error"]["code"], doc["error"]["details"]) == (400, "invalid_request", {"max_depth": 32})


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT, PACKED], ids=["array", "object", "packed"])
def test_deep_json_on_the_facia_route_is_facias_400(svc, body):
    status, doc, _ = call(svc, "/liveness", body)
    assert (status, doc) == (400, FACIA_CORRUPT)


def test_deep_json_on_the_video_route_is_400(svc):
    status, doc, _ = call(svc, "/v1/video-liveness", DEEP_OBJECT, {"X-API-Key": "lk_any"})
    assert (status, doc["error"]["code"]) == (400, "invalid_request")  # no JSON is accepted there at all


# -- our failures ---------------------------------------------------------------------------------------


def _body_for(path: str, key: str, session_id: str) -> tuple[bytes, str]:
    image = b64(jpeg())
    return {
        "/liveness": (json.dumps({"hash_id": key, "selfie_image": image}).encode(), "application/json"),
        "/v1/liveness": (jpeg(), "image/jpeg"),
        "/v1/video-liveness": (b"\x00\x00\x00\x20ftypisom" + b"\x00" * 64, "video/mp4"),
        "/start": (b"{}", "application/json"),
        "/process": (json.dumps({"session_id": session_id, "image": image}).encode(), "application/json"),
        "/complete": (json.dumps({"session_id": session_id}).encode(), "application/json"),
        "/v1/sessions": (json.dumps({"mode": "passive"}).encode(), "application/json"),
        "/v1/verify": (json.dumps({"image1": image, "image2": image}).encode(), "application/json"),
    }[path]


CHALLENGE_ROUTES = ("/start", "/process", "/complete")


@pytest.mark.parametrize("path", list(ALL_ROUTES))
def test_an_unexpected_failure_is_500_internal_error_in_the_routes_format(svc, monkeypatch, path):
    key = svc.core.keys.create("k", 5).raw_key
    session_id = asyncio.run(svc.challenges.start(key))["session_id"]  # for /process and /complete
    before = used(svc.core, "k")

    def locked(*a, **k):
        raise sqlite3.OperationalError("database is locked")

    async def store_locked(*a, **k):
        locked()

    monkeypatch.setattr(svc.core.keys, "check_credential", locked)
    if path in ("/process", "/complete"):  # a started session's calls go to its store, not the key check
        monkeypatch.setattr(svc.challenges, path[1:], store_locked)
    body, content_type = _body_for(path, key, session_id)
    status, doc, c = call(svc, path, body, {"X-API-Key": key, "X-Request-ID": "rid-7"}, content_type)
    assert status == 500 and doc["request_id"] == "rid-7" and c.response.headers["x-request-id"] == "rid-7"
    if path == "/liveness":  # FACIA's shape: {"error": message}
        assert doc == {"error": "The request failed on the server.", "request_id": "rid-7"}
    else:  # the challenge routes add Liveness_service's `success: false` (docs/COMPATIBILITY.md)
        assert doc == {"error": {"code": "internal_error", "message": "The request failed on the server."},
                       "request_id": "rid-7", **({"success": False} if path in CHALLENGE_ROUTES else {})}
    monkeypatch.undo()
    assert used(svc.core, "k") == before


def test_an_unexpected_failure_without_a_request_id_gets_a_new_one(svc, monkeypatch):
    def locked(*a, **k):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(svc.core.keys, "check_credential", locked)
    status, doc, c = call(svc, "/start", b"{}", {"X-API-Key": "lk_x", "X-Request-ID": "no spaces allowed"})
    assert status == 500 and re.fullmatch(r"[0-9a-f]{32}", doc["request_id"])
    assert c.response.headers["x-request-id"] == doc["request_id"]


def test_a_cancelled_request_is_not_turned_into_an_answer(svc, monkeypatch):
    async def cancelled(*a, **k):
        raise asyncio.CancelledError

    monkeypatch.setattr(svc.challenges, "start", cancelled)
    with pytest.raises(asyncio.CancelledError):
        call(svc, "/start", b"{}", {"X-API-Key": "lk_x"})
