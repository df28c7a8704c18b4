"""FACIA-compatible ``POST /liveness`` and ``GET /status_check`` against the served Bento."""

from __future__ import annotations

import json

import pytest

from e2e_conftest import (
    PDF_BYTES,
    REFERENCE_SCORES,
    SCORE_TOL,
    b64,
    gif_bytes,
    post_partial_body,
    truncated_jpeg,
)

pytestmark = pytest.mark.e2e

INVALID_CREDENTIALS = {"message": "Invalid credentials"}
REQUIRED = {"error": "Selfie_image is required and must be a JPEG, JPG or PNG."}
CORRUPT = {"error": "Invalid or corrupt selfie image. Images must be in PNG, JPG, or JPEG format."}
LIMIT_REACHED = {"message": "Your request limit has been reached."}


@pytest.fixture(scope="module")
def key(make_key):
    return make_key(1000)


def post(client, doc):
    return client.post("/liveness", json=doc)


def assert_success_shape(body: dict) -> dict:
    assert set(body) == {"liveness_result", "message"}, body
    assert body["message"] == "Success"
    result = body["liveness_result"]
    assert set(result) == {"is_live", "liveness_score"}, result
    assert type(result["is_live"]) is int and result["is_live"] in (0, 1)
    assert isinstance(result["liveness_score"], float)
    return result


def assert_full_precision(score: float) -> None:
    """FACIA answers the score unrounded; ours was rounded to 4 decimals before.  A real model's
    fused score with no more than 4 decimals happens about once in 10^12 images."""
    assert score != round(score, 4), score


def test_status_check(client):
    r = client.get("/status_check")
    assert r.status_code == 200
    assert r.text == "Service is live"
    assert r.headers["content-type"].startswith("text/plain")


def test_live_selfie(client, key, t1_jpeg):
    r = post(client, {"hash_id": key, "selfie_image": b64(t1_jpeg)})
    assert r.status_code == 201, r.text
    result = assert_success_shape(r.json())
    assert result["is_live"] == 1
    assert result["liveness_score"] >= 0.99
    assert_full_precision(result["liveness_score"])


@pytest.mark.parametrize("name", ["F1", "F2"])
def test_spoof_selfies_match_reference(client, key, name, f1_jpeg, f2_jpeg):
    jpeg = {"F1": f1_jpeg, "F2": f2_jpeg}[name]
    r = post(client, {"hash_id": key, "selfie_image": b64(jpeg)})
    assert r.status_code == 201, r.text
    result = assert_success_shape(r.json())
    assert result["is_live"] == 0
    assert abs(result["liveness_score"] - REFERENCE_SCORES[name]) <= SCORE_TOL, result
    assert_full_precision(result["liveness_score"])


def test_data_uri_prefix(client, key, t1_jpeg):
    r = post(client, {"hash_id": key, "selfie_image": "data:image/jpeg;base64," + b64(t1_jpeg)})
    assert r.status_code == 201, r.text
    assert assert_success_shape(r.json())["is_live"] == 1


def test_invalid_key(client, t1_jpeg):
    r = post(client, {"hash_id": "lk_" + "x" * 43, "selfie_image": b64(t1_jpeg)})
    assert r.status_code == 401
    assert r.json() == INVALID_CREDENTIALS


@pytest.mark.parametrize("doc", [{}, {"hash_id": ""}, {"hash_id": None}, {"hash_id": 12345}])
def test_missing_key(client, t1_jpeg, doc):
    r = post(client, {**doc, "selfie_image": b64(t1_jpeg)})
    assert r.status_code == 401
    assert r.json() == INVALID_CREDENTIALS


def test_non_json_body_is_unauthenticated(client, t1_jpeg):
    for body, ctype in [(b"this is not json", "application/json"), (t1_jpeg, "image/jpeg"), (b"", "application/json")]:
        r = client.post("/liveness", content=body, headers={"content-type": ctype})
        assert r.status_code == 401, (ctype, r.text)
        assert r.json() == INVALID_CREDENTIALS


# Bad requests: (doc without hash_id, expected body)
BAD_REQUESTS = {
    "missing": ({}, REQUIRED),
    "null": ({"selfie_image": None}, REQUIRED),
    "empty": ({"selfie_image": ""}, REQUIRED),
    "garbage_base64": ({"selfie_image": "%%% definitely not base64 %%%"}, CORRUPT),
    "base64_of_text": ({"selfie_image": b64(b"hello, this is plain text and not an image")}, CORRUPT),
    "gif": ({"selfie_image": b64(gif_bytes())}, CORRUPT),
    "pdf": ({"selfie_image": b64(PDF_BYTES)}, CORRUPT),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_selfie(client, key, case):
    doc, expected = BAD_REQUESTS[case]
    r = post(client, {"hash_id": key, **doc})
    assert r.status_code == 400, r.text
    assert r.json() == expected


def test_truncated_jpeg(client, key, t1_jpeg):
    r = post(client, {"hash_id": key, "selfie_image": b64(truncated_jpeg(t1_jpeg))})
    assert r.status_code == 400, r.text
    assert r.json() == CORRUPT


def test_errors_are_not_charged_and_quota_is_enforced(client, make_key, usage, t1_jpeg, f1_jpeg):
    key = make_key(2)
    bad = [doc for doc, _ in BAD_REQUESTS.values()] + [{"selfie_image": b64(truncated_jpeg(t1_jpeg))}]
    for doc in bad:
        r = post(client, {"hash_id": key, **doc})
        assert r.status_code == 400, r.text
    # Bad key / non-JSON never reach the key at all.
    assert post(client, {"hash_id": key + "x", "selfie_image": b64(t1_jpeg)}).status_code == 401
    u = usage(key)
    assert (u["used"], u["remaining"], u["limit"]) == (0, 2, 2), u

    for jpeg in (t1_jpeg, f1_jpeg):  # both verdicts are charged
        r = post(client, {"hash_id": key, "selfie_image": b64(jpeg)})
        assert r.status_code == 201, r.text
    r = post(client, {"hash_id": key, "selfie_image": b64(t1_jpeg)})
    assert r.status_code == 429
    assert r.json() == LIMIT_REACHED
    # Quota is checked before the image: a bad image on an exhausted key is still 429.
    r = post(client, {"hash_id": key, "selfie_image": "garbage"})
    assert r.status_code == 429
    assert r.json() == LIMIT_REACHED
    u = usage(key)
    assert (u["used"], u["remaining"]) == (2, 0), u


def test_body_over_limit_is_refused_without_reading_it(server, key):
    # Only 64 KB of the announced 15 MB is ever sent: a 413 proves the server did not wait for it.
    status, body = post_partial_body(server.port, "/liveness", {"Content-Type": "application/json"}, 15 * 1024 * 1024,
                                     b'{"hash_id": "' + key.encode() + b'", "selfie_image": "' + b"A" * 65536)
    assert status.startswith(b"HTTP/1.1 413"), status
    doc = json.loads(body)
    assert set(doc) == {"error"} and "exceeds" in doc["error"], doc


def test_body_over_limit_full_upload(client, key):
    big = "A" * (15 * 1024 * 1024)
    try:
        r = client.post("/liveness", content=json.dumps({"hash_id": key, "selfie_image": big}),
                        headers={"content-type": "application/json"})
    except Exception as e:  # the server may close the connection before the upload ends
        pytest.skip(f"connection closed mid-upload ({type(e).__name__}); covered by the raw-socket test")
    assert r.status_code == 413
    assert set(r.json()) == {"error"}
