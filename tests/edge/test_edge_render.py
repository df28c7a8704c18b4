"""edge/render.py: a LivenessError on the HTTP wire.  The native envelope
``{"error": {"code", "message", "details"?}, **extra}`` with the error's status (README "Errors"),
FACIA's bodies (README "FACIA-compatible"), ``Retry-After`` on every 503 and the 429s that
know when, and the status a BentoML API reports (``ctx.response.status_code``)."""

from __future__ import annotations

import pytest

from edge import render
from liveness.errors import (
    CORRUPT_IMAGE,
    INTERNAL_ERROR,
    INVALID_API_KEY,
    MODEL_UNAVAILABLE,
    NO_FACE,
    QUOTA_EXCEEDED,
    TOO_MANY_FAILED_ATTEMPTS,
    LivenessError,
)
from tests.edge.helpers import body_of, ctx


def test_native_envelope_without_details_and_with_extra_fields():
    r = render.error(LivenessError(NO_FACE, "No face was found in the image."), request_id="rid-1")
    assert r.status_code == 422
    assert body_of(r) == {"error": {"code": "no_face", "message": "No face was found in the image."},
                          "request_id": "rid-1"}
    assert "retry-after" not in r.headers


def test_native_envelope_with_details():
    err = LivenessError(QUOTA_EXCEEDED, "quota of 5 requests per month exhausted",
                        {"limit": 5, "period": "month", "resets_at": "2030-01-01T00:00:00+00:00"})
    r = render.error(err)
    assert r.status_code == 429
    assert body_of(r) == {"error": {"code": "quota_exceeded", "message": "quota of 5 requests per month exhausted",
                                    "details": {"limit": 5, "period": "month",
                                                "resets_at": "2030-01-01T00:00:00+00:00"}}}
    assert "retry-after" not in r.headers  # a quota knows no retry time


@pytest.mark.parametrize(("err", "retry_after"), [
    (LivenessError(MODEL_UNAVAILABLE, "down"), "1"),  # every 503: 1 s unless the error knows better
    (LivenessError(MODEL_UNAVAILABLE, "down", {"retry_after": 7}), "7"),
    (LivenessError(TOO_MANY_FAILED_ATTEMPTS, "wait", {"retry_after": 42}), "42"),
    (LivenessError(INTERNAL_ERROR, "ours"), None),
    (LivenessError(CORRUPT_IMAGE, "bad"), None),
])
def test_retry_after_header(err, retry_after):
    for r in (render.error(err), render.facia_error(err)):
        assert r.headers.get("retry-after") == retry_after


def test_a_bentoml_api_reports_the_status_on_its_context():
    c = ctx()
    r = render.error(LivenessError(INVALID_API_KEY, "API key is invalid or revoked"), c)
    assert r.status_code == c.response.status_code == 401
    c = ctx()
    r = render.facia_error(LivenessError(INVALID_API_KEY, "x"), c)
    assert r.status_code == c.response.status_code == 401 and body_of(r) == {"message": "Invalid credentials"}
    c = ctx()
    r = render.answer(c, 201, {"message": "Success"})
    assert (r.status_code, c.response.status_code, body_of(r)) == (201, 201, {"message": "Success"})
    r = render.answer(None, 202, {"a": 1}, {"X-Extra": "y"})  # a Starlette route: no context
    assert r.status_code == 202 and r.headers["x-extra"] == "y"


def test_not_ready():
    r = render.not_ready()
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert body_of(r) == {"error": {"code": "not_ready", "message": "Models are loading."}}
