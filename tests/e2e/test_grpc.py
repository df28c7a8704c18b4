"""The BioID-style gRPC API over a real channel to the served Bento (docs/GRPC.md).

The shared ``server`` fixture runs ``bentoml serve`` with its own ``LIVENESS_GRPC_PORT``; every
worker serves gRPC on that port.  Tokens come from ``python -m liveness tokens create``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import grpc
import pytest

from e2e_conftest import (
    MEDIA,
    REFERENCE_SCORES,
    SCORE_TOL,
    ApiKey,
    create_key,
    gray_jpeg,
    read_bytes,
    run_cli,
    truncated_jpeg,
)
from edge.protogen import load

pb2, pb2_grpc = load()
VIDEO = MEDIA / "videos" / "jomariya_real_1.mp4"


def make_token(key: ApiKey, ttl: int = 600) -> str:
    proc = run_cli(key.db_path, "tokens", "create", "--key", key.name, "--ttl", str(ttl))
    token = proc.stdout.strip().splitlines()[-1].strip()
    assert token.count(".") == 2, proc.stdout
    return token


def auth(token: str, **extra: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), *extra.items()]


def images(*blobs: bytes) -> Any:
    return pb2.LivenessDetectionRequest(live_images=[pb2.ImageData(image=b) for b in blobs])


@pytest.fixture(scope="module")
def stub(server) -> Iterator[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield pb2_grpc.LivenessWebServiceStub(channel)


@pytest.fixture
def keyed(make_key):
    """``keyed(limit)`` -> (key, token)."""

    def make(limit: int = 10) -> tuple[ApiKey, str]:
        key = make_key(limit)
        return key, make_token(key)

    return make


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call(*args, **kwargs)
    return e.value


# ----------------------------------------------------------------------------- verdicts


def test_live_image(stub, keyed, usage, t1_jpeg):
    key, token = keyed()
    resp = stub.LivenessDetection(images(t1_jpeg), metadata=auth(token), timeout=60)
    assert resp.status == pb2.SUCCEEDED and resp.live and list(resp.errors) == []
    assert 0.5 <= resp.liveness_score <= 1.0
    (props,) = resp.image_properties
    (face,) = props.faces
    assert face.box.width > 50 and face.box.height > 50
    assert face.texture_liveness_score == pytest.approx(resp.liveness_score)
    assert {q.check for q in props.quality_assessments} == {"FaceTooSmall", "FaceCutOff", "MultipleFaces"}
    assert usage(key)["used"] == 1


def test_spoof_image_is_an_answer_not_an_error(stub, keyed, usage, f1_jpeg):
    key, token = keyed()
    resp = stub.LivenessDetection(images(f1_jpeg), metadata=auth(token), timeout=60)
    assert resp.status == pb2.SUCCEEDED and not resp.live
    assert [e.error_code for e in resp.errors] == ["RejectedByPassiveLiveDetection"]
    assert resp.liveness_score == pytest.approx(REFERENCE_SCORES["F1"], abs=SCORE_TOL)
    assert usage(key)["used"] == 1  # a verdict is charged, live or not


def test_two_images_both_must_be_live_and_cost_one_unit(stub, keyed, usage, t1_jpeg, f1_jpeg):
    key, token = keyed()
    both = stub.LivenessDetection(images(t1_jpeg, t1_jpeg), metadata=auth(token), timeout=60)
    assert both.live and len(both.image_properties) == 2
    mixed = stub.LivenessDetection(images(t1_jpeg, f1_jpeg), metadata=auth(token), timeout=60)
    assert not mixed.live and mixed.status == pb2.SUCCEEDED
    scores = [p.faces[0].texture_liveness_score for p in mixed.image_properties]
    assert mixed.liveness_score == pytest.approx(min(scores))
    assert mixed.liveness_score == pytest.approx(REFERENCE_SCORES["F1"], abs=SCORE_TOL)
    (error,) = mixed.errors
    assert error.error_code == "RejectedByPassiveLiveDetection" and error.message.startswith("image 2")
    assert usage(key)["used"] == 2  # one unit per call


def test_no_face_is_faulted_and_not_charged(stub, keyed, usage, t1_jpeg):
    key, token = keyed()
    resp = stub.LivenessDetection(images(gray_jpeg()), metadata=auth(token), timeout=60)
    assert resp.status == pb2.FAULTED and not resp.live
    assert [e.error_code for e in resp.errors] == ["NoFaceFound"]
    resp = stub.LivenessDetection(images(t1_jpeg, gray_jpeg()), metadata=auth(token), timeout=60)
    assert resp.status == pb2.FAULTED and resp.errors[0].message.startswith("image 2")
    assert usage(key)["used"] == 0


# ----------------------------------------------------------------------------- metadata


def test_metadata_reference_number_jobid_and_response_time(stub, keyed, t1_jpeg):
    _, token = keyed()
    ref = f"ref-{uuid.uuid4().hex[:8]}"
    _, call = stub.LivenessDetection.with_call(images(t1_jpeg), metadata=auth(token, **{"reference-number": ref}), timeout=60)
    initial = dict(call.initial_metadata())
    assert initial["reference-number"] == ref
    uuid.UUID(initial["jobid"])
    assert float(dict(call.trailing_metadata())["response-time-ms"]) > 0
    # errors carry them too
    err = rpc_error(stub.LivenessDetection, images(b"not an image"), metadata=auth(token, **{"reference-number": ref}), timeout=60)
    assert dict(err.initial_metadata())["reference-number"] == ref and "jobid" in dict(err.initial_metadata())
    trailer = dict(err.trailing_metadata())
    assert float(trailer["response-time-ms"]) >= 0 and trailer["error-code"]
    _, call = stub.LivenessDetection.with_call(images(t1_jpeg), metadata=auth(token), timeout=60)
    assert "reference-number" not in dict(call.initial_metadata())


# ----------------------------------------------------------------------------- auth and quota


def test_missing_garbage_and_foreign_tokens_are_unauthenticated(stub, t1_jpeg):
    import jwt

    foreign = jwt.encode({"sub": "x", "iat": int(time.time()), "exp": int(time.time()) + 60, "jti": "j"},
                         "an-other-secret-of-at-least-32-bytes!", algorithm="HS256")
    for metadata in ([], [("authorization", "Bearer")], [("authorization", "Bearer garbage")],
                     [("authorization", "Basic dXNlcjpwYXNz")], auth(foreign)):
        err = rpc_error(stub.LivenessDetection, images(t1_jpeg), metadata=metadata, timeout=60)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, metadata


def test_a_session_token_is_not_a_grpc_token(server, stub, make_key, usage, t1_jpeg):
    import httpx

    key = make_key(5)
    r = httpx.post(server.url + "/v1/sessions", json={"mode": "passive"}, headers={"X-API-Key": key}, timeout=60)
    assert r.status_code == 200, r.text
    session = r.json()
    err = rpc_error(stub.LivenessDetection, images(t1_jpeg), metadata=auth(session["auth_token"]), timeout=60)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    doc = httpx.get(f"{server.url}/v1/sessions/{session['session_id']}", headers={"X-API-Key": key}, timeout=30)
    assert doc.json()["attempts"] == [] and usage(key)["used"] == 1  # the session only


def test_expired_token_is_unauthenticated(stub, make_key, usage, t1_jpeg):
    key = make_key(5)
    token = make_token(key, ttl=1)
    time.sleep(2.2)
    err = rpc_error(stub.LivenessDetection, images(t1_jpeg), metadata=auth(token), timeout=60)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in err.details()
    assert usage(key)["used"] == 0


def test_revoked_key_stops_its_tokens(stub, keyed, t1_jpeg):
    key, token = keyed()
    assert stub.LivenessDetection(images(t1_jpeg), metadata=auth(token), timeout=60).live
    run_cli(key.db_path, "keys", "revoke", key.name)
    err = rpc_error(stub.LivenessDetection, images(t1_jpeg), metadata=auth(token), timeout=60)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_quota_is_resource_exhausted_exactly_after_the_limit(stub, keyed, usage, t1_jpeg):
    key, token = keyed(limit=2)
    for _ in range(2):
        assert stub.LivenessDetection(images(t1_jpeg), metadata=auth(token), timeout=60).live
    err = rpc_error(stub.LivenessDetection, images(t1_jpeg), metadata=auth(token), timeout=60)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.trailing_metadata())["error-code"] == "quota_exceeded"
    assert usage(key)["used"] == 2


def test_bad_input_is_invalid_argument_and_not_charged(stub, keyed, usage, t1_jpeg):
    key, token = keyed()
    cases = {
        "corrupt_image": images(truncated_jpeg(t1_jpeg)),
        "empty_image": images(b""),
        "missing_image": images(),
        "invalid_request": images(t1_jpeg, t1_jpeg, t1_jpeg),
    }
    for code, request in cases.items():
        err = rpc_error(stub.LivenessDetection, request, metadata=auth(token), timeout=60)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (code, err.details())
        assert dict(err.trailing_metadata())["error-code"] == code
    assert usage(key)["used"] == 0


def test_a_tiny_deadline_is_deadline_exceeded_and_not_charged(stub, keyed, usage, t1_jpeg):
    key, token = keyed()
    err = rpc_error(stub.LivenessDetection, images(t1_jpeg), metadata=auth(token), timeout=0.001)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    if VIDEO.is_file():  # long enough (~0.4 s) for the server to be mid-check when the deadline passes
        err = rpc_error(stub.VideoLivenessDetection, pb2.VideoLivenessDetectionRequest(video=read_bytes(VIDEO)),
                        metadata=auth(token), timeout=0.15)
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server's refund lands after the client gave up: give it at least a second (as before),
    # then poll with a generous deadline, since on a busy machine it can take longer.
    time.sleep(1.0)
    deadline = time.monotonic() + 60
    while usage(key)["used"] != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert usage(key)["used"] == 0


# ----------------------------------------------------------------------------- video


def test_video_is_live(stub, keyed, usage):
    if not VIDEO.is_file():
        pytest.fail(f"dev video missing: {VIDEO}")
    key, token = keyed()
    resp, call = stub.VideoLivenessDetection.with_call(
        pb2.VideoLivenessDetectionRequest(video=read_bytes(VIDEO)), metadata=auth(token), timeout=120
    )
    assert resp.status == pb2.SUCCEEDED and resp.live and list(resp.errors) == []
    assert 0.5 <= resp.liveness_score <= 1.0
    assert resp.image_properties and all(p.faces for p in resp.image_properties)
    assert "jobid" in dict(call.initial_metadata())
    assert usage(key)["used"] == 1  # one unit per video, never per frame


def test_empty_video_is_invalid_argument(stub, keyed, usage):
    key, token = keyed()
    err = rpc_error(stub.VideoLivenessDetection, pb2.VideoLivenessDetectionRequest(), metadata=auth(token), timeout=60)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = rpc_error(stub.VideoLivenessDetection, pb2.VideoLivenessDetectionRequest(video=b"\x00" * 4096),
                    metadata=auth(token), timeout=60)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert usage(key)["used"] == 0


def test_grpc_refuses_keys_of_other_stores(stub, e2e_dir, t1_jpeg):
    """A token minted against another key store (another secret) does not authenticate here."""
    other_db = e2e_dir / f"other-{uuid.uuid4().hex[:6]}.sqlite3"
    token = make_token(create_key(other_db, 5))
    err = rpc_error(stub.LivenessDetection, images(t1_jpeg), metadata=auth(token), timeout=60)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_answers_are_counted_in_the_decisions_metric(stub, keyed, client, t1_jpeg):
    import re

    def count(outcome: str) -> float:
        text = client.get("/metrics").text
        m = re.search(rf'^liveness_decisions_total\{{[^}}]*endpoint="grpc_image"[^}}]*outcome="{outcome}"[^}}]*\}} (\S+)$',
                      text, re.M) or re.search(
            rf'^liveness_decisions_total\{{[^}}]*outcome="{outcome}"[^}}]*endpoint="grpc_image"[^}}]*\}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    _, token = keyed()
    before = count("live")
    assert stub.LivenessDetection(images(t1_jpeg), metadata=auth(token), timeout=60).live
    assert count("live") == before + 1
