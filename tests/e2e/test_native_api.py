"""Native ``POST /v1/liveness`` (multipart, JSON, raw body), the BentoML client and the
operational endpoints, against the served Bento."""

from __future__ import annotations

import json
import re

import bentoml
import httpx
import pytest

from e2e_conftest import (
    PDF_BYTES,
    REFERENCE_SCORES,
    SCORE_TOL,
    b64,
    gif_bytes,
    gray_jpeg,
    post_partial_body,
    truncated_jpeg,
)

pytestmark = pytest.mark.e2e

MODELS = ("retinaface", "minifasnet_v2", "minifasnet_v1se")


@pytest.fixture(scope="module")
def key(make_key):
    return make_key(1000)


# ----------------------------------------------------------------------------- request shapes


def send(client, mode: str, jpeg: bytes, key: str | None, headers: dict | None = None) -> httpx.Response:
    headers = dict(headers or {})
    if mode == "multipart":
        if key is not None:
            headers["X-API-Key"] = key
        return client.post("/v1/liveness", files={"image": ("selfie.jpg", jpeg, "image/jpeg")}, headers=headers)
    if mode == "json":
        doc = {"image": b64(jpeg)}
        if key is not None:
            doc["hash_id"] = key
        return client.post("/v1/liveness", json=doc, headers=headers)
    if mode == "raw":
        if key is not None:
            headers["X-API-Key"] = key
        return client.post("/v1/liveness", content=jpeg, headers={"content-type": "image/jpeg", **headers})
    raise ValueError(mode)


def assert_verdict(body: dict, live: bool) -> None:
    for field in ("request_id", "decision", "is_live", "score", "threshold", "face", "faces_found",
                  "quality_flags", "model_scores", "models"):
        assert field in body, (field, body)
    assert isinstance(body["request_id"], str) and body["request_id"]
    assert body["decision"] == ("live" if live else "spoof")
    assert body["is_live"] is live
    assert isinstance(body["score"], float) and 0.0 <= body["score"] <= 1.0
    assert isinstance(body["threshold"], float)
    assert (body["score"] >= body["threshold"]) is live
    face = body["face"]
    assert set(face) >= {"x", "y", "width", "height", "score"}
    assert face["width"] > 0 and face["height"] > 0 and 0.0 < face["score"] <= 1.0
    assert body["faces_found"] >= 1
    assert isinstance(body["quality_flags"], list)
    assert set(body["model_scores"]) == {"minifasnet_v2", "minifasnet_v1se"}
    assert all(0.0 <= v <= 1.0 for v in body["model_scores"].values())
    assert [m["name"] for m in body["models"]] == list(MODELS)
    for m in body["models"]:
        assert set(m) >= {"name", "version", "sha256"}
        assert isinstance(m["sha256"], str) and re.fullmatch(r"[0-9a-f]+", m["sha256"])


@pytest.mark.parametrize("mode", ["multipart", "json", "raw"])
def test_live_t1(client, key, t1_jpeg, mode):
    r = send(client, mode, t1_jpeg, key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_verdict(body, live=True)
    assert body["score"] >= 0.99
    assert r.headers["x-request-id"] == body["request_id"]


@pytest.mark.parametrize("mode", ["multipart", "json", "raw"])
@pytest.mark.parametrize("name", ["F1", "F2"])
def test_spoofs_match_reference(client, key, f1_jpeg, f2_jpeg, mode, name):
    jpeg = {"F1": f1_jpeg, "F2": f2_jpeg}[name]
    r = send(client, mode, jpeg, key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_verdict(body, live=False)
    assert abs(body["score"] - REFERENCE_SCORES[name]) <= SCORE_TOL, body


def test_request_id_echoed(client, key, t1_jpeg):
    rid = "e2e-req-0123456789"
    r = send(client, "raw", t1_jpeg, key, headers={"X-Request-ID": rid})
    assert r.status_code == 200
    assert r.json()["request_id"] == rid
    assert r.headers["x-request-id"] == rid
    # ...on errors as well.
    r = send(client, "raw", t1_jpeg, None, headers={"X-Request-ID": rid})
    assert r.status_code == 401
    assert r.json()["request_id"] == rid and r.headers["x-request-id"] == rid


def test_json_data_uri_and_header_key(client, key, t1_jpeg):
    r = client.post("/v1/liveness", json={"image": "data:image/jpeg;base64," + b64(t1_jpeg)},
                    headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "live"


# ----------------------------------------------------------------------------- errors


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body["error"]) >= {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


@pytest.mark.parametrize("mode", ["multipart", "json", "raw"])
def test_missing_api_key(client, t1_jpeg, mode):
    assert_error(send(client, mode, t1_jpeg, None), 401, "missing_api_key")


@pytest.mark.parametrize("mode", ["multipart", "json", "raw"])
def test_invalid_api_key(client, t1_jpeg, mode):
    assert_error(send(client, mode, t1_jpeg, "lk_" + "z" * 43), 401, "invalid_api_key")


def _error_cases(key: str, t1: bytes, bomb: bytes) -> list[tuple[str, dict, int, str]]:
    """(label, httpx.post kwargs, status, code) -- every one with a valid key."""
    h = {"X-API-Key": key}
    raw = lambda data: {"content": data, "headers": {**h, "content-type": "application/octet-stream"}}  # noqa: E731
    return [
        ("json_no_image", {"json": {"hash_id": key}}, 400, "missing_image"),
        ("json_empty_image", {"json": {"hash_id": key, "image": ""}}, 400, "missing_image"),
        ("multipart_no_image", {"files": {"other": ("x.txt", b"hello", "text/plain")}, "headers": h}, 400,
         "missing_image"),
        ("invalid_base64", {"json": {"hash_id": key, "image": "@@@ not base64 at all @@@"}}, 400, "invalid_base64"),
        ("gif", raw(gif_bytes()), 415, "unsupported_format"),
        ("pdf", raw(PDF_BYTES), 415, "unsupported_format"),
        ("gif_base64", {"json": {"hash_id": key, "image": b64(gif_bytes())}}, 415, "unsupported_format"),
        ("truncated_jpeg", raw(truncated_jpeg(t1)), 400, "corrupt_image"),
        ("truncated_jpeg_multipart", {"files": {"image": ("t.jpg", truncated_jpeg(t1), "image/jpeg")}, "headers": h},
         400, "corrupt_image"),
        ("pixel_bomb_png", raw(bomb), 413, "image_too_many_pixels"),
        ("gray_no_face", raw(gray_jpeg()), 422, "no_face"),
        ("malformed_json", {"content": b'{"image": "abc", ', "headers": {**h, "content-type": "application/json"}},
         400, "invalid_request"),
        ("json_not_object", {"content": b"[1, 2, 3]", "headers": {**h, "content-type": "application/json"}},
         400, "invalid_request"),
    ]


def test_error_codes_and_no_charge(client, make_key, usage, t1_jpeg, bomb_png):
    key = make_key(1)
    failures = []
    for label, kwargs, status, code in _error_cases(key, t1_jpeg, bomb_png):
        r = client.post("/v1/liveness", **kwargs)
        try:
            body = assert_error(r, status, code)
            assert body.get("request_id"), body
        except AssertionError as e:
            failures.append(f"{label}: {e}")
    assert not failures, "\n".join(failures)
    u = usage(key)
    assert (u["used"], u["remaining"]) == (0, 1), u

    # The single request of the quota is still there...
    assert send(client, "raw", t1_jpeg, key).status_code == 200
    # ...and then it is gone, for good and bad images alike.
    body = assert_error(send(client, "raw", t1_jpeg, key), 429, "quota_exceeded")
    assert body["error"].get("details", {}).get("limit") == 1
    assert_error(send(client, "raw", gray_jpeg(), key), 429, "quota_exceeded")
    assert usage(key)["used"] == 1


def test_body_over_limit_is_refused_early(server, key):
    status, body = post_partial_body(server.port, "/v1/liveness", {"X-API-Key": key, "Content-Type": "image/jpeg"},
                                     15 * 1024 * 1024, b"\xff\xd8" + b"\0" * 65536)  # 64 KB of the announced 15 MB
    assert status.startswith(b"HTTP/1.1 413"), status
    assert json.loads(body)["error"]["code"] == "image_too_large"


def test_chunked_body_over_limit(server, key):
    """No Content-Length: the middleware counts while reading and stops at the limit."""
    chunk = b"\0" * (1024 * 1024)

    def body():
        yield b"\xff\xd8"
        for _ in range(20):
            yield chunk

    try:
        r = httpx.post(server.url + "/v1/liveness", content=body(), timeout=60,
                       headers={"X-API-Key": key, "content-type": "image/jpeg"})
    except httpx.TransportError as e:  # closed mid-upload after the 413
        pytest.skip(f"server closed the connection mid-upload ({type(e).__name__})")
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "image_too_large")


# ----------------------------------------------------------------------------- bentoml client


def test_bentoml_sync_client(server, key, t1_jpeg):
    """The native API's root parameter is positional-only ``bytes``, so the generated client
    method takes the body as its single positional argument.

    ``SyncHTTPClient(token=key)`` sends ``Authorization: Bearer <key>``, which the native API
    accepts like ``X-API-Key``; the key may also travel in a JSON body (``{"image", "hash_id"}``
    sent as bytes) or in a header set on the client's underlying ``httpx.Client``."""
    with bentoml.SyncHTTPClient(server.url, timeout=60) as c:
        assert "v1_liveness" in c.endpoints
        # Raw JPEG bytes without any key are refused.
        with pytest.raises(bentoml.exceptions.BentoMLException) as exc:
            c.v1_liveness(t1_jpeg)
        assert "missing_api_key" in str(exc.value)

        # (1) JSON document as the bytes body.
        doc = json.dumps({"image": b64(t1_jpeg), "hash_id": key}).encode()
        out = c.v1_liveness(doc)
        assert out["decision"] == "live" and out["is_live"] is True and out["score"] >= 0.99

    # token= sends the key as a Bearer token: raw JPEG bytes are then enough.
    with bentoml.SyncHTTPClient(server.url, token=key, timeout=60) as c:
        out = c.v1_liveness(t1_jpeg)
        assert out["decision"] == "live" and out["score"] >= 0.99

    # (2) Raw JPEG bytes with X-API-Key on the underlying httpx client.
    with bentoml.SyncHTTPClient(server.url, timeout=60) as c:
        c.client.headers["X-API-Key"] = key
        out = c.v1_liveness(t1_jpeg)
        assert out["decision"] == "live" and out["score"] >= 0.99


# ----------------------------------------------------------------------------- ops endpoints


def test_health_endpoints(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200


def test_docs_json(client):
    r = client.get("/docs.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/liveness" in paths and "/v1/liveness" in paths
    assert "post" in paths["/liveness"] and "post" in paths["/v1/liveness"]


def _batch_counts(client) -> dict[str, float]:
    """Rows-histogram count per model, summed over its series (versions, canary or shadow traffic)."""
    r = client.get("/metrics")
    assert r.status_code == 200
    counts = {}
    for model in MODELS:
        found = re.findall(rf'^liveness_batch_size_count\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$', r.text, re.M)
        counts[model] = sum(float(c) for c in found)
    return counts


def test_metrics_batch_size(client, key, t1_jpeg):
    before = _batch_counts(client)
    for _ in range(2):
        assert send(client, "raw", t1_jpeg, key).status_code == 200
    after = _batch_counts(client)
    for model in MODELS:  # each request ran every model at least once, batched or not
        assert after[model] - before[model] >= 1, (model, before[model], after[model])
    text = client.get("/metrics").text
    assert "# TYPE liveness_batch_size histogram" in text
    for model in MODELS:
        assert re.search(rf'^liveness_batch_size_bucket\{{[^}}]*model="{model}"', text, re.M)
    assert "liveness_decisions" in text
