"""Azure AI Face liveness sessions (edge/azure.py) driven by Microsoft's own ``azure-ai-vision-face``
SDK against a served Bento: only the endpoint (the Bento's URL) and the key (our API key in an
``AzureKeyCredential``) change.  The SDK has no client-side call, so the phone's call is made with
httpx in the mobile SDKs' layout (``Authorization: Bearer <authToken>``, multipart ``Content`` and
``Metadata``).  GA v1.2's paths (no SDK of that version is installed) are driven over raw httpx.
Real models, real SQLite, one server for the module; charges read with the CLI.
"""

from __future__ import annotations

import json
from typing import Iterator

import httpx
import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.ai.vision.face import FaceSessionClient
from azure.ai.vision.face.models import (
    CreateLivenessSessionContent,
    CreateLivenessWithVerifySessionContent,
    FaceLivenessDecision,
    FaceSessionStatus,
    LivenessOperationMode,
    Versions,
)

from e2e_conftest import MEDIA, create_key, key_usage, start_server

pytestmark = pytest.mark.e2e

IMAGES, VER = MEDIA / "images", MEDIA / "verification"
T1, F1 = (IMAGES / "silentface_image_T1.jpg").read_bytes(), (IMAGES / "silentface_image_F1.jpg").read_bytes()
VERSIONS = [v.value for v in Versions]  # the preview versions this SDK speaks


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    d = tmp_path_factory.mktemp("azure")
    db = d / "keys.sqlite3"
    srv = start_server(db, d)
    try:
        yield {"url": srv.url, "db": db}
    finally:
        srv.stop()


def sdk(server: dict, key: str, version: str) -> FaceSessionClient:
    return FaceSessionClient(endpoint=server["url"], credential=AzureKeyCredential(key), api_version=version)


def phone(url: str, version: str, kind: str, token: str, image: bytes, **extra) -> httpx.Response:
    """The client's call with the session's token, multipart as Azure's mobile SDKs send it."""
    files = {"Metadata": (None, json.dumps({"client": "e2e"}), "application/json"),
             "Content": ("content.jpg", image, "image/jpeg"), **extra}
    return httpx.post(f"{url}/face/{version}/{kind}/singleModal", files=files,
                      headers={"Authorization": f"Bearer {token}"}, timeout=60)


@pytest.mark.parametrize("version", VERSIONS)
def test_sdk_create_phone_get_list_audit_delete(server, version):
    key = create_key(server["db"], 20)
    with sdk(server, key, version) as client:
        live = client.create_liveness_session(CreateLivenessSessionContent(
            liveness_operation_mode=LivenessOperationMode.PASSIVE, device_correlation_id="dev-live",
            send_results_to_client=True, auth_token_time_to_live_in_seconds=600))
        spoof = client.create_liveness_session(CreateLivenessSessionContent(
            liveness_operation_mode=LivenessOperationMode.PASSIVE))
        assert key_usage(key)["used"] == 2  # one unit per session
        before = client.get_liveness_session_result(live.session_id)
        assert before.status == FaceSessionStatus.NOT_STARTED and before.result is None and not before.session_expired

        r = phone(server["url"], version, "detectLiveness", live.auth_token, T1)
        assert r.status_code == 200, r.text
        assert r.json()["livenessDecision"] == "realface" and r.headers["apim-request-id"]
        r2 = phone(server["url"], version, "detectLiveness", spoof.auth_token, F1)
        assert (r2.status_code, r2.content) == (204, b"")  # sendResultsToClient false: nothing but "done"
        assert key_usage(key)["used"] == 2  # the client's calls are never charged

        got = client.get_liveness_session_result(live.session_id)
        assert got.status == FaceSessionStatus.RESULT_AVAILABLE and got.device_correlation_id == "dev-live"
        assert got.result.response.body.liveness_decision == FaceLivenessDecision.REAL_FACE
        assert got.result.response.status_code == 200 and got.result.request_id == r.headers["apim-request-id"]
        assert got.result.request.url == f"/face/{version}/detectLiveness/singleModal"
        assert len(got.result.digest) == 64 and got.result.digest == got.result.digest.upper()
        assert got.result.response.body.target.face_rectangle.width > 0
        spoofed = client.get_liveness_session_result(spoof.session_id)
        assert spoofed.result.response.body.liveness_decision == FaceLivenessDecision.SPOOF_FACE
        assert spoofed.result.response.status_code == 204

        ids = [s.id for s in client.get_liveness_sessions()]
        assert ids == [spoof.session_id, live.session_id]  # newest first
        assert [s.id for s in client.get_liveness_sessions(top=1)] == [spoof.session_id]
        assert [s.id for s in client.get_liveness_sessions(start=spoof.session_id)] == [live.session_id]
        entries = client.get_liveness_session_audit_entries(live.session_id)
        assert [e.id for e in entries] == [1] and entries[0].session_id == live.session_id

        client.delete_liveness_session(live.session_id)  # the SDK accepts only 200
        with pytest.raises(ResourceNotFoundError) as e:
            client.get_liveness_session_result(live.session_id)
        assert e.value.error.code == "SessionNotFound"
    assert key_usage(key)["used"] == 2


@pytest.mark.parametrize("version", VERSIONS)
def test_sdk_liveness_with_verify(server, version):
    key = create_key(server["db"], 20)
    with sdk(server, key, version) as client:
        created = client.create_liveness_with_verify_session(
            CreateLivenessWithVerifySessionContent(liveness_operation_mode=LivenessOperationMode.PASSIVE,
                                                   device_correlation_id="dev-v"),
            verify_image=(VER / "deepface_img5.jpg").read_bytes())
        assert created.verify_image.quality_for_recognition in ("high", "medium", "low")
        assert created.verify_image.face_rectangle.width > 0 and key_usage(key)["used"] == 1
        r = phone(server["url"], version, "detectLivenessWithVerify", created.auth_token,
                  (VER / "deepface_img6.jpg").read_bytes())
        assert r.status_code == 204, r.text
        got = client.get_liveness_with_verify_session_result(created.session_id)
        vr = got.result.response.body.verify_result
        assert vr.is_identical is True and 0 < vr.match_confidence <= 1
        assert vr.verify_image.face_rectangle.width > 0
        assert [s.id for s in client.get_liveness_with_verify_sessions()] == [created.session_id]
        assert len(client.get_liveness_with_verify_session_audit_entries(created.session_id)) == 1
        # The kinds stay apart: a with-verify session is not a liveness session.
        with pytest.raises(ResourceNotFoundError):
            client.get_liveness_session_result(created.session_id)
        client.delete_liveness_with_verify_session(created.session_id)
    assert key_usage(key)["used"] == 1


def test_bad_input_is_azure_shaped_and_not_charged(server):
    key = create_key(server["db"], 20)
    version = VERSIONS[-1]
    with sdk(server, key, version) as client:
        with pytest.raises(HttpResponseError) as e:
            client.create_liveness_session({"livenessOperationMode": "Selfie"})
        assert (e.value.status_code, e.value.error.code) == (400, "BadArgument")
        with pytest.raises(HttpResponseError) as e:
            client.create_liveness_session({"livenessOperationMode": "Passive", "authTokenTimeToLiveInSeconds": 5})
        assert (e.value.status_code, e.value.error.code) == (400, "BadArgument")
        assert "'authTokenTimeToLiveInSeconds'" in e.value.error.message
        with pytest.raises(HttpResponseError) as e:  # a truncated reference
            client.create_liveness_with_verify_session(
                CreateLivenessWithVerifySessionContent(liveness_operation_mode=LivenessOperationMode.PASSIVE),
                verify_image=T1[:2000])
        assert (e.value.status_code, e.value.error.code) == (400, "InvalidImage")
    with sdk(server, "lk_not-a-key", version) as bad:
        with pytest.raises(HttpResponseError) as e:
            bad.create_liveness_session({"livenessOperationMode": "Passive"})
        assert (e.value.status_code, e.value.error.code) == (401, "401")
    assert key_usage(key)["used"] == 0

    with sdk(server, key, version) as client:
        s = client.create_liveness_session({"livenessOperationMode": "Passive", "sendResultsToClient": True})
    assert key_usage(key)["used"] == 1
    url = server["url"]
    r = httpx.post(f"{url}/face/{version}/detectLiveness/singleModal", files={"Content": ("c", b"", "image/jpeg")},
                   headers={"Authorization": "Bearer not.a.token"}, timeout=60)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "401")
    r = phone(url, version, "detectLiveness", s.auth_token, b"\xff\xd8\xff\xe0 truncated")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "InvalidImage")
    r = phone(url, version, "detectLivenessWithVerify", s.auth_token, T1)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "token_mode_mismatch")
    assert key_usage(key)["used"] == 1  # neither the client's errors nor its calls are charged


def test_ga_v12_paths_over_http(server):
    key = create_key(server["db"], 20)
    url, h = server["url"] + "/face/v1.2", {"Ocp-Apim-Subscription-Key": key}
    r = httpx.post(f"{url}/detectLiveness-sessions", headers=h, timeout=60,
                   json={"livenessOperationMode": "Passive", "deviceCorrelationId": "ga-dev",
                         "numberOfClientAttemptsAllowed": 2})
    assert r.status_code == 200, r.text
    s = r.json()
    assert (s["status"], s["results"]) == ("NotStarted", {"attempts": []}) and s["authToken"].count(".") == 2
    assert phone(server["url"], "v1.2", "detectLiveness", s["authToken"], F1).status_code == 204
    assert phone(server["url"], "v1.2", "detectLiveness", s["authToken"], T1).status_code == 204
    got = httpx.get(f"{url}/detectLiveness-sessions/{s['sessionId']}", headers=h, timeout=60).json()
    assert got["status"] == "Succeeded" and got["modelVersion"]
    newest, oldest = got["results"]["attempts"]
    assert (newest["attemptId"], newest["attemptStatus"], newest["result"]["livenessDecision"]) == (2, "Succeeded", "realface")
    assert oldest["result"]["livenessDecision"] == "spoofface"
    assert newest["result"]["targets"]["color"]["faceRectangle"]["width"] > 0 and len(newest["result"]["digest"]) == 64

    files = {"livenessOperationMode": (None, "Passive"), "verifyImage": ("ref.jpg", (VER / "deepface_img5.jpg").read_bytes(), "image/jpeg")}
    r = httpx.post(f"{url}/detectLivenessWithVerify-sessions", headers=h, files=files, timeout=60)
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["results"]["verifyReferences"][0]["faceRectangle"]["width"] > 0
    assert phone(server["url"], "v1.2", "detectLivenessWithVerify", v["authToken"],
                 (VER / "deepface_img10.jpg").read_bytes()).status_code == 204
    got = httpx.get(f"{url}/detectLivenessWithVerify-sessions/{v['sessionId']}", headers=h, timeout=60).json()
    assert got["results"]["attempts"][0]["result"]["verifyResult"]["isIdentical"] is True

    assert httpx.delete(f"{url}/detectLiveness-sessions/{s['sessionId']}", headers=h, timeout=60).status_code == 200
    r = httpx.get(f"{url}/detectLiveness-sessions/{s['sessionId']}", headers=h, timeout=60)
    assert (r.status_code, r.json()) == (404, {"error": {"code": "SessionNotFound", "message": "No such session for this API key."}})
    r = httpx.post(f"{url}/detectLiveness-sessions", headers=h, content=b"{", timeout=60)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "BadArgument")
    r = httpx.put(f"{url}/detectLiveness-sessions", headers=h, timeout=60)
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    assert key_usage(key)["used"] == 2
