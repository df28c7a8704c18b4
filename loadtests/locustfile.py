"""Locust load test for the liveness service.

    LIVENESS_LOADTEST_KEY=<raw key> locust -f loadtests/locustfile.py --host http://127.0.0.1:3000
    LIVENESS_LOADTEST_KEY=<raw key> locust -f loadtests/locustfile.py --headless -u 16 -r 16 -t 30s \
        --host http://127.0.0.1:3000 FaciaUser

Users:
  FaciaUser  (weight 3)  POST /liveness     JSON {"hash_id", "selfie_image": base64}, expects 201
  NativeUser (weight 1)  POST /v1/liveness  multipart field ``image``, key in X-API-Key, expects 200

A response is a failure if its status is wrong OR its verdict is wrong: the live dev image (T1)
must come back live, the spoofs (F1, F2) not live.

Environment:
  LIVENESS_LOADTEST_KEY       API key (required for anything but 401s)
  LIVENESS_LOADTEST_MEDIA     folder with silentface_image_{T1,F1,F2}.jpg
                              (default: <repo>/../shared/media/dev/images)
  LIVENESS_LOADTEST_WAIT      seconds between tasks per user: "0" (default, max throughput),
                              "0.5" (constant) or "0.5,2" (uniform between)
  LIVENESS_LOADTEST_USER_RPS  if set, pace each user to this many requests/s
                              (locust ``constant_throughput``); overrides LIVENESS_LOADTEST_WAIT
"""

from __future__ import annotations

import base64
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from locust import HttpUser, between, constant, constant_throughput, task

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("LIVENESS_LOADTEST_MEDIA") or REPO.parent / "shared" / "media" / "dev" / "images")
API_KEY = os.environ.get("LIVENESS_LOADTEST_KEY", "")


@dataclass(frozen=True)
class Sample:
    name: str  # T1, F1, F2
    live: bool  # expected verdict
    raw: bytes
    facia_body: bytes  # complete JSON body, encoded once


def _load_samples() -> list[Sample]:
    samples = []
    for name, live in (("T1", True), ("F1", False), ("F2", False)):
        path = MEDIA / f"silentface_image_{name}.jpg"
        raw = path.read_bytes()
        body = json.dumps({"hash_id": API_KEY, "selfie_image": base64.b64encode(raw).decode("ascii")}).encode()
        samples.append(Sample(name, live, raw, body))
    return samples


SAMPLES = _load_samples()  # pre-encoded once at import, not per request


def _wait_time():
    rps = os.environ.get("LIVENESS_LOADTEST_USER_RPS", "").strip()
    if rps:
        return constant_throughput(float(rps))
    spec = os.environ.get("LIVENESS_LOADTEST_WAIT", "0").strip() or "0"
    if "," in spec:
        low, high = (float(v) for v in spec.split(",", 1))
        return between(low, high)
    return constant(float(spec))


WAIT_TIME = _wait_time()


def _check(response, sample: Sample, status: int, is_live_of) -> None:
    """Mark ``response`` (opened with catch_response=True) as success or failure."""
    if response.status_code != status:
        response.failure(f"{sample.name}: status {response.status_code}, expected {status}")
        return
    try:
        is_live = is_live_of(response.json())
    except Exception as exc:  # malformed body: report the shape, not the body
        response.failure(f"{sample.name}: unexpected response body ({type(exc).__name__})")
        return
    if is_live != sample.live:
        want = "live" if sample.live else "spoof"
        response.failure(f"{sample.name}: wrong verdict, expected {want}")
        return
    response.success()


class FaciaUser(HttpUser):
    """FACIA-compatible endpoint: JSON with the image in base64."""

    weight = 3
    wait_time = WAIT_TIME

    @task
    def liveness(self) -> None:
        sample = random.choice(SAMPLES)
        with self.client.post(
            "/liveness",
            data=sample.facia_body,
            headers={"Content-Type": "application/json"},
            name="/liveness",
            catch_response=True,
        ) as response:
            _check(response, sample, 201, lambda doc: bool(doc["liveness_result"]["is_live"]))


class NativeUser(HttpUser):
    """Native endpoint: multipart upload, key in the X-API-Key header."""

    weight = 1
    wait_time = WAIT_TIME

    @task
    def v1_liveness(self) -> None:
        sample = random.choice(SAMPLES)
        with self.client.post(
            "/v1/liveness",
            files={"image": (f"{sample.name}.jpg", sample.raw, "image/jpeg")},
            headers={"X-API-Key": API_KEY},
            name="/v1/liveness",
            catch_response=True,
        ) as response:
            _check(response, sample, 200, lambda doc: bool(doc["is_live"]))
