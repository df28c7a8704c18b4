"""BioID BWS 3 drop-in over a served Bento (docs/GRPC.md "BioID BWS 3").

The gRPC client is generated at test time by grpc_tools.protoc from proto/bioid/services/v1/
bws.proto (BWS 3's layout), as a BWS integration would generate it from BioID's file; the client
signs its own JWTs with the client id and key that ``liveness keys bws-client`` issued.  The REST
routes are called with httpx in BWS's JSON shape.  One served Bento for the module.
"""

from __future__ import annotations

import importlib
import sys
import time
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Iterator

import grpc
import httpx
import jwt
import pytest

from e2e_conftest import (
    MEDIA,
    REFERENCE_SCORES,
    REPO,
    SCORE_TOL,
    ApiKey,
    b64,
    create_key,
    gray_jpeg,
    key_usage,
    read_bytes,
    run_cli,
    start_server,
    truncated_jpeg,
)
from liveness.keys.bws import sign_client_jwt

PROTO = REPO / "proto" / "bioid" / "services" / "v1" / "bws.proto"
VIDEO = MEDIA / "videos" / "jomariya_real_1.mp4"
VERIFICATION = MEDIA / "verification"
SAME = ("deepface_img5.jpg", "deepface_img10.jpg")  # pairs.csv: yes (cosine 0.821 in docs/VERIFICATION.md)
OTHER = ("deepface_img20.jpg", "deepface_img5.jpg")  # pairs.csv: no (0.082)


@pytest.fixture(scope="module")
def bws(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(bws_pb2, bws_pb2_grpc) generated from our .proto into a temporary folder."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("bws-client")
    include = Path(protoc.__file__).parent / "_proto"
    assert protoc.main(["protoc", f"-I{PROTO.parent}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(PROTO)]) == 0
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("bws_pb2")
        pb2_grpc = importlib.import_module("bws_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    assert pb2.DESCRIPTOR.package == "bioid.services.v1"
    return pb2, pb2_grpc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("bws-server")
    srv = start_server(d / "keys.sqlite3", d)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def stub(server, bws) -> Iterator[Any]:
    _, pb2_grpc = bws
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield pb2_grpc.BioIDWebServiceStub(channel)


class Client:
    """A BWS client: an API key with its BWS client id and key (from the CLI)."""

    def __init__(self, key: ApiKey, client_id: str, client_key: str) -> None:
        self.key, self.client_id, self.client_key = key, client_id, client_key

    def jwt(self, **kw: Any) -> str:
        return sign_client_jwt(self.client_id, self.client_key, **kw)

    def metadata(self, **extra: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.jwt()}"), *extra.items()]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.jwt()}"}

    @property
    def used(self) -> int:
        return key_usage(self.key)["used"]


@pytest.fixture
def client(server) -> Client:
    key = create_key(server.db_path, 20)
    lines = run_cli(server.db_path, "keys", "bws-client", key.name).stdout.strip().splitlines()
    return Client(key, lines[-2].strip(), lines[-1].strip())


def images(pb2: Any, *blobs: bytes) -> Any:
    return pb2.LivenessDetectionRequest(live_images=[pb2.ImageData(image=b) for b in blobs])


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call(*args, **kwargs)
    return e.value


def photo(name: str) -> bytes:
    return read_bytes(VERIFICATION / name)


# ----------------------------------------------------------------------------- gRPC


def test_liveness_detection_live_and_spoof_with_bws_metadata(stub, bws, client, t1_jpeg, f1_jpeg):
    pb2, _ = bws
    ref = f"order-{uuid.uuid4().hex[:8]}"
    resp, call = stub.LivenessDetection.with_call(images(pb2, t1_jpeg), metadata=client.metadata(**{"reference-number": ref}),
                                                  timeout=60)
    assert resp.status == pb2.SUCCEEDED and resp.live and list(resp.errors) == []
    assert 0.5 <= resp.liveness_score <= 1.0
    (props,) = resp.image_properties
    (face,) = props.faces
    assert face.texture_liveness_score == pytest.approx(resp.liveness_score)
    assert face.motion_liveness_score == 0.0  # documented: no motion model
    assert {q.check: q.score for q in props.quality_assessments}["FaceCutOff"] in (0.0, 1.0)
    initial = dict(call.initial_metadata())
    assert str(uuid.UUID(initial["jobid"])) == initial["jobid"]
    assert initial["bws-version"].startswith("3.") and initial["reference-number"] == ref
    assert parsedate_to_datetime(initial["date"]).tzinfo is not None
    assert float(dict(call.trailing_metadata())["response-time-ms"]) > 0

    spoof = stub.LivenessDetection(images(pb2, f1_jpeg), metadata=client.metadata(), timeout=60)
    assert spoof.status == pb2.SUCCEEDED and not spoof.live
    assert [e.error_code for e in spoof.errors] == ["RejectedByPassiveLiveDetection"]
    assert spoof.liveness_score == pytest.approx(REFERENCE_SCORES["F1"], abs=SCORE_TOL)

    both = stub.LivenessDetection(images(pb2, t1_jpeg, f1_jpeg), metadata=client.metadata(), timeout=60)
    assert not both.live and len(both.image_properties) == 2
    assert both.liveness_score == pytest.approx(REFERENCE_SCORES["F1"], abs=SCORE_TOL)
    assert client.used == 3  # one unit per call, two images included


def test_video_liveness_detection(stub, bws, client):
    pb2, _ = bws
    resp = stub.VideoLivenessDetection(pb2.VideoLivenessDetectionRequest(video=read_bytes(VIDEO)),
                                       metadata=client.metadata(), timeout=120)
    assert resp.status == pb2.SUCCEEDED and resp.live and list(resp.errors) == []
    assert 0.5 <= resp.liveness_score <= 1.0
    assert resp.image_properties and all(p.frame_number >= 0 for p in resp.image_properties)
    assert client.used == 1


def test_photo_verify_matching_and_non_matching(stub, bws, client):
    pb2, _ = bws
    level = pb2.PhotoVerifyResponse
    same = stub.PhotoVerify(pb2.PhotoVerifyRequest(live_images=[pb2.ImageData(image=photo(SAME[0]))],
                                                   photo=photo(SAME[1]), disable_liveness_detection=True),
                            metadata=client.metadata(), timeout=60)
    assert same.status == pb2.SUCCEEDED and same.verification_level == level.LEVEL_5
    assert same.verification_score == pytest.approx(0.821, abs=0.03)
    assert not same.live and same.liveness_score == 0.0  # liveness was disabled
    (face,) = same.image_properties[0].faces
    assert face.left_eye.x > face.right_eye.x  # the person's left eye is on the image's right
    assert same.photo_properties.faces[0].left_eye.x > 0

    other = stub.PhotoVerify(pb2.PhotoVerifyRequest(live_images=[pb2.ImageData(image=photo(OTHER[0]))],
                                                    photo=photo(OTHER[1]), disable_liveness_detection=True),
                             metadata=client.metadata(), timeout=60)
    assert other.status == pb2.SUCCEEDED and other.verification_level == level.NOT_RECOGNIZED
    assert other.verification_score < 0.3 and "NotRecognized" in [e.error_code for e in other.errors]

    # with liveness: the verdict decides whether a match may count
    checked = stub.PhotoVerify(pb2.PhotoVerifyRequest(live_images=[pb2.ImageData(image=photo(SAME[0]))],
                                                      photo=photo(SAME[1])), metadata=client.metadata(), timeout=60)
    assert checked.status == pb2.SUCCEEDED
    assert checked.image_properties[0].faces[0].texture_liveness_score == pytest.approx(checked.liveness_score)
    if checked.live:
        assert checked.verification_level == level.LEVEL_5
    else:
        assert checked.verification_level == level.NOT_RECOGNIZED
        assert "RejectedByPassiveLiveDetection" in [e.error_code for e in checked.errors]
    assert checked.verification_score == pytest.approx(same.verification_score, abs=1e-4)
    assert client.used == 3


def test_auth_errors_are_unauthenticated_and_not_charged(stub, bws, client, t1_jpeg):
    pb2, _ = bws
    now = time.time()
    wrong_key = jwt.encode({"sub": client.client_id, "iss": client.client_id, "aud": "BWS", "iat": int(now),
                            "exp": int(now) + 600}, b"k" * 64, algorithm="HS256")
    expired = client.jwt(now=now - 3600, ttl_s=60)  # signed an hour ago, valid one minute: no waiting
    wrong_aud = client.jwt(audience="not-BWS")
    for token in (wrong_key, expired, wrong_aud, "garbage"):
        err = rpc_error(stub.LivenessDetection, images(pb2, t1_jpeg), metadata=[("authorization", f"Bearer {token}")],
                        timeout=60)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, token
        assert "jobid" in dict(err.initial_metadata())
    err = rpc_error(stub.PhotoVerify, pb2.PhotoVerifyRequest(), timeout=60)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    run_cli(client.key.db_path, "keys", "revoke", client.key.name)
    err = rpc_error(stub.LivenessDetection, images(pb2, t1_jpeg), metadata=client.metadata(), timeout=60)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert client.used == 0


def test_input_errors_are_not_charged(stub, bws, client, t1_jpeg):
    pb2, _ = bws
    nf = stub.LivenessDetection(images(pb2, gray_jpeg()), metadata=client.metadata(), timeout=60)
    assert nf.status == pb2.FAULTED and [e.error_code for e in nf.errors] == ["FaceNotFound"]
    pv = stub.PhotoVerify(pb2.PhotoVerifyRequest(live_images=[pb2.ImageData(image=t1_jpeg)], photo=gray_jpeg()),
                          metadata=client.metadata(), timeout=60)
    assert pv.status == pb2.FAULTED and pv.errors[0].error_code == "FaceNotFound"
    assert pv.errors[0].message.startswith("photo")
    for request, call in (
        (images(pb2, truncated_jpeg(t1_jpeg)), stub.LivenessDetection),
        (images(pb2), stub.LivenessDetection),
        (images(pb2, t1_jpeg, t1_jpeg, t1_jpeg), stub.LivenessDetection),
        (pb2.PhotoVerifyRequest(live_images=[pb2.ImageData(image=t1_jpeg)]), stub.PhotoVerify),
        (pb2.PhotoVerifyRequest(live_images=[pb2.ImageData(image=t1_jpeg)], photo=b"not an image"), stub.PhotoVerify),
        (pb2.VideoLivenessDetectionRequest(), stub.VideoLivenessDetection),
    ):
        err = rpc_error(call, request, metadata=client.metadata(), timeout=60)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert dict(err.trailing_metadata())["error-code"]
    assert client.used == 0


# ----------------------------------------------------------------------------- REST


def test_rest_routes_answer_in_bws_json(server, client, t1_jpeg, f1_jpeg):
    with httpx.Client(base_url=server.url, timeout=120) as http:
        r = http.post("/api/v1/livenessdetection", json={"liveImages": [{"image": b64(t1_jpeg), "tags": []}]},
                      headers={**client.headers(), "Reference-Number": "ref-7"})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["status"] == "SUCCEEDED" and doc["live"] is True and doc["errors"] == []
        assert set(doc) == {"status", "errors", "imageProperties", "live", "livenessScore"}
        props = doc["imageProperties"][0]
        assert set(props) == {"rotated", "faces", "qualityScore", "qualityAssessments", "frameNumber"}
        assert props["faces"][0]["textureLivenessScore"] == pytest.approx(doc["livenessScore"])
        assert str(uuid.UUID(r.headers["jobid"])) and r.headers["bws-version"].startswith("3.")
        assert r.headers["reference-number"] == "ref-7" and "date" in r.headers
        assert float(r.headers["response-time-ms"]) > 0

        spoof = http.post("/api/v1/livenessdetection", json={"liveImages": [{"image": b64(f1_jpeg)}]},
                          headers=client.headers()).json()
        assert spoof["live"] is False and spoof["errors"][0]["errorCode"] == "RejectedByPassiveLiveDetection"

        video = http.post("/api/v1/videolivenessdetection", json={"video": b64(read_bytes(VIDEO))},
                          headers=client.headers())
        assert video.status_code == 200 and video.json()["live"] is True

        pv = http.post("/api/v1/photoverify", headers=client.headers(), json={
            "liveImages": [{"image": b64(photo(SAME[0]))}], "photo": b64(photo(SAME[1])),
            "disableLivenessDetection": True})
        assert pv.status_code == 200, pv.text
        assert pv.json()["verificationLevel"] == "LEVEL_5" and pv.json()["verificationScore"] > 0.7
        assert client.used == 4

        nf = http.post("/api/v1/livenessdetection", json={"liveImages": [{"image": b64(gray_jpeg())}]},
                       headers=client.headers())
        assert nf.status_code == 200 and nf.json()["status"] == "FAULTED"
        assert nf.json()["errors"][0]["errorCode"] == "FaceNotFound"

        for body, headers, status, grpc_code, reason in (
            ({"liveImages": [{"image": b64(t1_jpeg)}]}, {}, 401, 16, "missing_api_key"),
            ({"liveImages": [{"image": b64(t1_jpeg)}]}, {"Authorization": f"Bearer {client.jwt(now=time.time() - 3600, ttl_s=60)}"},
             401, 16, "invalid_api_key"),
            ({"liveImages": [{"image": "@@not base64@@"}]}, client.headers(), 400, 3, "invalid_base64"),
            ({"liveImages": [{"image": b64(truncated_jpeg(t1_jpeg))}]}, client.headers(), 400, 3, "corrupt_image"),
            ({"liveImages": "x"}, client.headers(), 400, 3, "invalid_request"),
            ({}, client.headers(), 400, 3, "missing_image"),
        ):
            r = http.post("/api/v1/livenessdetection", json=body, headers=headers)
            assert r.status_code == status, (body, r.text)
            err = r.json()
            assert err["code"] == grpc_code and err["details"][0]["reason"] == reason and err["message"]
        deep = http.post("/api/v1/photoverify", content=b"[" * 5000 + b"]" * 5000,
                         headers={**client.headers(), "Content-Type": "application/json"})
        assert deep.status_code == 400 and deep.json()["details"][0]["reason"] == "invalid_request"
        big = http.post("/api/v1/livenessdetection", content=b"x" * (30 * 1024 * 1024), headers=client.headers())
        assert big.status_code == 413 and big.json()["details"][0]["reason"] == "image_too_large"
        assert client.used == 4  # no error was charged
