"""Locust load test for the liveness service.

    LIVENESS_LOADTEST_KEY=<raw key> locust -f loadtests/locustfile.py --host http://127.0.0.1:3000
    LIVENESS_LOADTEST_KEY=<raw key> locust -f loadtests/locustfile.py --headless -u 16 -r 16 -t 30s \
        --host http://127.0.0.1:3000 FaciaUser

Users:
  FaciaUser     (weight 3)  POST /liveness     JSON {"hash_id", "selfie_image": base64}, expects 201
  NativeUser    (weight 1)  POST /v1/liveness  multipart field ``image``, key in X-API-Key, expects 200
  VideoUser     (weight 1)  POST /v1/video-liveness  raw video/mp4 body (a 4 s clip of the real dev
                            video, cut once at import with PyAV), expects 200 and ``alive``
  ChallengeUser (weight 1)  POST /start {}, ~CHALLENGE_FRAMES frames of the real dev video at ~8 fps
                            via POST /process {session_id, image: base64 JPEG}, then POST /complete
  GrpcUser      (weight 1)  gRPC LivenessWebService/LivenessDetection with T1, expects SUCCEEDED + live
                            (token from LIVENESS_LOADTEST_TOKEN; host:port from LIVENESS_LOADTEST_GRPC)
  SessionUser   (weight 1)  the app-server / client round trip: POST /v1/sessions (API key), the
                            client's POST /v1/liveness with the session token, GET and DELETE
                            /v1/sessions/{id}; the recorded decision must match the image
  VerifyUser    (weight 1)  POST /v1/verify with a pair from the dev verification pairs.csv;
                            ``is_identical`` must match the label

A response is a failure if its status is wrong OR its verdict is wrong: the live dev image (T1)
must come back live, the spoofs (F1, F2) not live, the video alive.  With LIVENESS_LOADTEST_MIX
(a folder with a ``labels.csv``, e.g. the phone-photo mix of ``benchmarks/phone_mix.py``) FaciaUser,
NativeUser and SessionUser send that set's images instead, cycling through it in order (one
cycle shared by all users of the process, so every image is sent equally often), and the verdict
must match each file's label (``real`` live, anything else not live).  Challenges are random, so a
challenge session only has to end cleanly: every call 200, and /complete a "passed" or "failed"
verdict (a "failed" verdict is fine; an error status is not).

``make loadtest SCENARIO=FaciaUser USERS=8 DURATION=30s`` (loadtests/run.py) starts a server,
creates the key and token, runs Locust and prints a summary.

Environment:
  LIVENESS_LOADTEST_KEY       API key (required for anything but 401s)
  LIVENESS_LOADTEST_MEDIA     folder with silentface_image_{T1,F1,F2}.jpg
                              (default: <repo>/../shared/media/dev/images)
  LIVENESS_LOADTEST_MIX       folder with labels.csv (columns file,label,...) and the files it
                              names: the single-image users' images (default: T1, F1, F2)
  LIVENESS_LOADTEST_WAIT      seconds between tasks per user: "0" (default, max throughput),
                              "0.5" (constant) or "0.5,2" (uniform between)
  LIVENESS_LOADTEST_USER_RPS  if set, pace each user to this many requests/s (``paced``: like
                              locust's ``constant_throughput``); overrides LIVENESS_LOADTEST_WAIT.
                              Users start at staggered phases of the interval (``PacedStart``),
                              so the paced load is spread out, not sent in bursts
  LIVENESS_LOADTEST_VIDEO     source video (default: <media>/../videos/jomariya_real_1.mp4)
  LIVENESS_LOADTEST_FRAMES    frames per challenge session (default 24, i.e. ~3 s at 8 fps)
  LIVENESS_LOADTEST_TOKEN     gRPC bearer token (python -m liveness tokens create --key NAME)
  LIVENESS_LOADTEST_GRPC      gRPC address host:port (default: the --host's host, port 50051)
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

import grpc
from grpc.experimental import gevent as grpc_gevent
from locust import HttpUser, User, between, constant, task

# grpcio's blocking calls would stall gevent's hub (every Locust user in this process) otherwise.
grpc_gevent.init_gevent()

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("LIVENESS_LOADTEST_MEDIA") or REPO.parent / "shared" / "media" / "dev" / "images")
API_KEY = os.environ.get("LIVENESS_LOADTEST_KEY", "")
VIDEO = Path(os.environ.get("LIVENESS_LOADTEST_VIDEO") or MEDIA.parent / "videos" / "jomariya_real_1.mp4")
CLIP_SECONDS = 4.0
CHALLENGE_FPS = 8.0
CHALLENGE_FRAMES = int(os.environ.get("LIVENESS_LOADTEST_FRAMES", "24"))
GRPC_TOKEN = os.environ.get("LIVENESS_LOADTEST_TOKEN", "")


@dataclass(frozen=True)
class Sample:
    name: str  # T1, F1, F2 (or a mix's file name)
    live: bool  # expected verdict
    raw: bytes
    facia_body: bytes  # complete JSON body, encoded once


def _sample(name: str, live: bool, raw: bytes) -> Sample:
    body = json.dumps({"hash_id": API_KEY, "selfie_image": base64.b64encode(raw).decode("ascii")}).encode()
    return Sample(name, live, raw, body)


def _load_samples() -> list[Sample]:
    return [_sample(name, live, (MEDIA / f"silentface_image_{name}.jpg").read_bytes())
            for name, live in (("T1", True), ("F1", False), ("F2", False))]


def _load_mix(folder: Path) -> list[Sample]:
    """The files ``folder/labels.csv`` names, in its order; ``real`` is live, anything else not."""
    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise RuntimeError(f"{folder / 'labels.csv'} lists no images")
    return [_sample(r["file"], r["label"] == "real", (folder / r["file"]).read_bytes()) for r in rows]


DEV_SAMPLES = _load_samples()  # pre-encoded once at import, not per request
MIX = os.environ.get("LIVENESS_LOADTEST_MIX", "").strip()
SAMPLES = _load_mix(Path(MIX)) if MIX else DEV_SAMPLES
_CYCLE = itertools.cycle(SAMPLES)  # gevent: one thread, so users share it without a lock


def next_sample() -> Sample:
    """A mix is sent in order (each image equally often, whatever the timing); the dev set at random."""
    return next(_CYCLE) if MIX else random.choice(SAMPLES)


def paced(rate: float):
    """Like locust's ``constant_throughput(rate)`` (no catching up after a slow task), but on a
    schedule of slots that ``PacedStart.on_start`` begins at the user's own phase: locust's
    measures from the user's creation, so every user started together stays in step with the
    others whatever it does first."""
    interval = 1.0 / rate

    def wait_time(user) -> float:
        now = time.perf_counter()
        user._pace_slot = max(getattr(user, "_pace_slot", now) + interval, now)
        return user._pace_slot - now

    return wait_time


def _wait_time():
    rps = os.environ.get("LIVENESS_LOADTEST_USER_RPS", "").strip()
    if rps:
        return paced(float(rps))
    spec = os.environ.get("LIVENESS_LOADTEST_WAIT", "0").strip() or "0"
    if "," in spec:
        low, high = (float(v) for v in spec.split(",", 1))
        return between(low, high)
    return constant(float(spec))


WAIT_TIME = _wait_time()
USER_RPS = float(os.environ.get("LIVENESS_LOADTEST_USER_RPS", "").strip() or 0)
_STARTED = itertools.count()


class PacedStart:
    """Paced users (LIVENESS_LOADTEST_USER_RPS) begin at staggered phases of their interval.

    Locust starts users in batches of floor(spawn rate) at once, so N paced users started
    together would send every round as one burst of N requests: the level would measure a queue
    of N, not the offered rate (8 users at 14 req/s in all: p50 ~100 ms against ~25 ms spread
    out, on the dev images).  User k first waits frac(k x golden ratio) of an interval, which
    spreads any number of users evenly, and its ``paced`` slots count from there."""

    def on_start(self) -> None:
        if USER_RPS > 0:
            import gevent

            gevent.sleep(((next(_STARTED) * 0.6180339887) % 1.0) / USER_RPS)
            self._pace_slot = time.perf_counter()  # the first task's start: slots follow from it


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


def _http_failure(response, what: str, status: int) -> bool:
    """Mark ``response`` failed (naming the error code) unless its status is ``status``."""
    if response.status_code == status:
        return False
    code = ""
    try:
        code = f" ({response.json()['error']['code']})"
    except Exception:
        pass
    response.failure(f"{what}: status {response.status_code}{code}, expected {status}")
    return True


class FaciaUser(PacedStart, HttpUser):
    """FACIA-compatible endpoint: JSON with the image in base64."""

    weight = 3
    wait_time = WAIT_TIME

    @task
    def liveness(self) -> None:
        sample = next_sample()
        with self.client.post(
            "/liveness",
            data=sample.facia_body,
            headers={"Content-Type": "application/json"},
            name="/liveness",
            catch_response=True,
        ) as response:
            _check(response, sample, 201, lambda doc: bool(doc["liveness_result"]["is_live"]))


class NativeUser(PacedStart, HttpUser):
    """Native endpoint: multipart upload, key in the X-API-Key header."""

    weight = 1
    wait_time = WAIT_TIME

    @task
    def v1_liveness(self) -> None:
        sample = next_sample()
        with self.client.post(
            "/v1/liveness",
            files={"image": (f"{sample.name}.jpg", sample.raw, "image/jpeg")},
            headers={"X-API-Key": API_KEY},
            name="/v1/liveness",
            catch_response=True,
        ) as response:
            _check(response, sample, 200, lambda doc: bool(doc["is_live"]))


# --------------------------------------------------------------------------- video and challenges


def _cut_clip(path: Path, seconds: float) -> bytes:
    """The first ``seconds`` of ``path`` as an in-memory MP4 (video stream copied, no re-encode)."""
    import av

    out_buf = io.BytesIO()
    with av.open(str(path)) as src, av.open(out_buf, "w", format="mp4") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        for packet in src.demux(vin):
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            if packet.pts is not None and packet.pts * vin.time_base >= seconds:
                break
            packet.stream = vout
            dst.mux(packet)
    return out_buf.getvalue()


def _challenge_frames(path: Path, fps: float, count: int) -> list[str]:
    """``count`` frames of ``path`` sampled at ~``fps``, each a base64 JPEG (encoded once)."""
    import av

    frames: list[str] = []
    step = Fraction(1) / Fraction(fps).limit_denominator(1000)
    next_t = Fraction(0)
    with av.open(str(path)) as src:
        vin = src.streams.video[0]
        for frame in src.decode(vin):
            t = frame.time if frame.time is not None else 0.0
            if t + 1e-6 < next_t:
                continue
            next_t += step
            buf = io.BytesIO()
            frame.to_image().save(buf, format="JPEG", quality=90)
            frames.append(base64.b64encode(buf.getvalue()).decode("ascii"))
            if len(frames) >= count:
                break
    if not frames:
        raise RuntimeError(f"no frames decoded from {path}")
    return frames


VIDEO_CLIP = _cut_clip(VIDEO, CLIP_SECONDS)  # once at import, not per request
CHALLENGE_JPEGS = _challenge_frames(VIDEO, CHALLENGE_FPS, CHALLENGE_FRAMES)


class VideoUser(PacedStart, HttpUser):
    """Video endpoint: a 4 s clip of a real person as the raw MP4 body; expects 200 and alive."""

    weight = 1
    wait_time = WAIT_TIME

    @task
    def video_liveness(self) -> None:
        with self.client.post(
            "/v1/video-liveness",
            data=VIDEO_CLIP,
            headers={"Content-Type": "video/mp4", "X-API-Key": API_KEY},
            name="/v1/video-liveness",
            catch_response=True,
        ) as response:
            if _http_failure(response, "video", 200):
                return
            try:
                alive = bool(response.json()["alive"])
            except Exception as exc:
                response.failure(f"video: unexpected response body ({type(exc).__name__})")
                return
            if not alive:
                response.failure("video: wrong verdict, expected alive")
                return
            response.success()


class ChallengeUser(PacedStart, HttpUser):
    """Active challenge session: /start, frames at ~8 fps to /process, then /complete.

    Challenges are drawn at random and the clip is a person who just looks at the camera, so the
    verdict may well be "failed"; what must hold is that every call answers 200 and the session
    ends cleanly (verification_complete, or /complete's verdict "passed"/"failed")."""

    weight = 1
    wait_time = WAIT_TIME

    def _post(self, path: str, doc: dict, check) -> dict | None:
        with self.client.post(
            path,
            data=json.dumps(doc),
            headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
            name=path,
            catch_response=True,
        ) as response:
            if _http_failure(response, path, 200):
                return None
            try:
                out = response.json()
                problem = check(out)
            except Exception as exc:
                response.failure(f"{path}: unexpected response body ({type(exc).__name__})")
                return None
            if problem:
                response.failure(f"{path}: {problem}")
                return None
            response.success()
            return out

    @task
    def session(self) -> None:
        started = self._post("/start", {}, lambda d: None if d.get("session_id") else "no session_id")
        if started is None:
            return
        sid = started["session_id"]
        period = 1.0 / CHALLENGE_FPS
        for b64 in CHALLENGE_JPEGS:
            t0 = time.monotonic()
            out = self._post("/process", {"session_id": sid, "image": b64},
                             lambda d: None if "verification_complete" in d else "no verification_complete field")
            if out is None:
                return
            if out.get("verification_complete") or out.get("verification_failed"):
                break  # the session is decided; more frames would be refused
            self._sleep(period - (time.monotonic() - t0))
        self._post("/complete", {"session_id": sid},
                   lambda d: None if d.get("verdict") in ("passed", "failed") else f"verdict {d.get('verdict')!r}")

    @staticmethod
    def _sleep(seconds: float) -> None:
        if seconds > 0:
            import gevent

            gevent.sleep(seconds)


# --------------------------------------------------------------------------- gRPC

sys.path.insert(0, str(REPO))
from edge import protogen  # noqa: E402  (light: no models, no BentoML)

PB2, PB2_GRPC = protogen.load()
GRPC_METHOD = "/liveness.bws.v1.LivenessWebService/LivenessDetection"
T1 = next(s for s in DEV_SAMPLES if s.name == "T1")


class GrpcUser(PacedStart, User):
    """gRPC LivenessDetection with the live image T1; expects SUCCEEDED and live.

    One channel per user, each with its own connection (a local subchannel pool), pinned to the
    server worker the kernel gave it (the workers share the port with SO_REUSEPORT)."""

    weight = 1
    wait_time = WAIT_TIME

    def __init__(self, environment) -> None:
        super().__init__(environment)
        target = os.environ.get("LIVENESS_LOADTEST_GRPC", "")
        if not target:
            host = urlparse(self.host or "http://127.0.0.1").hostname or "127.0.0.1"
            target = f"{host}:50051"
        self.target = target
        # A local subchannel pool: otherwise gRPC shares one TCP connection among all channels of
        # this process with the same target, and every user would land on the same server worker.
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20),
                                                              ("grpc.max_receive_message_length", 64 << 20),
                                                              ("grpc.use_local_subchannel_pool", 1)])
        self.stub = PB2_GRPC.LivenessWebServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {GRPC_TOKEN}"),) if GRPC_TOKEN else ()
        self.request = PB2.LivenessDetectionRequest(live_images=[PB2.ImageData(image=T1.raw)])

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def liveness_detection(self) -> None:
        start = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            reply = self.stub.LivenessDetection(self.request, metadata=self.metadata, timeout=30)
            length = reply.ByteSize()
            if reply.status != PB2.SUCCEEDED:
                codes = ",".join(e.error_code for e in reply.errors)
                exception = RuntimeError(f"T1: status {PB2.JobStatus.Name(reply.status)} ({codes})")
            elif not reply.live:
                exception = RuntimeError("T1: wrong verdict, expected live")
        except grpc.RpcError as err:
            exception = RuntimeError(f"T1: {err.code().name}: {err.details()}")
        self.environment.events.request.fire(
            request_type="grpc",
            name=GRPC_METHOD,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exception,
            context={},
        )


# --------------------------------------------------------------------------- sessions and verification


class SessionUser(PacedStart, HttpUser):
    """App server creates a passive session, the client checks one image with only the token,
    the app server reads the result and deletes the session."""

    weight = 1
    wait_time = WAIT_TIME

    @task
    def round_trip(self) -> None:
        sample = next_sample()
        key = {"X-API-Key": API_KEY}
        with self.client.post("/v1/sessions", json={"mode": "passive", "max_attempts": 1}, headers=key,
                              name="/v1/sessions", catch_response=True) as r:
            if _http_failure(r, "create", 200):
                return
            session = r.json()
            r.success()
        with self.client.post("/v1/liveness", files={"image": (f"{sample.name}.jpg", sample.raw, "image/jpeg")},
                              headers={"Authorization": f"Bearer {session['auth_token']}"},
                              name="/v1/liveness [session token]", catch_response=True) as r:
            if _http_failure(r, "client attempt", 200):
                return
            r.success()
        path = f"/v1/sessions/{session['session_id']}"
        with self.client.get(path, headers=key, name="/v1/sessions/{id}", catch_response=True) as r:
            if _http_failure(r, "read", 200):
                return
            decision = (r.json().get("result") or {}).get("decision")
            if decision != ("realface" if sample.live else "spoofface"):
                r.failure(f"{sample.name}: wrong decision {decision!r}")
                return
            r.success()
        with self.client.delete(path, headers=key, name="/v1/sessions/{id} [delete]", catch_response=True) as r:
            if not _http_failure(r, "delete", 204):
                r.success()


def _verify_pairs() -> list[tuple[str, bytes, bytes, bool]]:
    import csv

    folder = MEDIA.parent / "verification"
    with open(folder / "pairs.csv", newline="") as f:
        return [(f"{row['file_a']}~{row['file_b']}", (folder / row["file_a"]).read_bytes(),
                 (folder / row["file_b"]).read_bytes(), row["same_person"] == "yes") for row in csv.DictReader(f)]


VERIFY_PAIRS = _verify_pairs()


class VerifyUser(PacedStart, HttpUser):
    """1:1 face verification of two uploads; the answer must match pairs.csv."""

    weight = 1
    wait_time = WAIT_TIME

    @task
    def verify(self) -> None:
        name, a, b, same = random.choice(VERIFY_PAIRS)
        with self.client.post("/v1/verify", files={"image1": ("a.jpg", a, "image/jpeg"), "image2": ("b.jpg", b, "image/jpeg")},
                              headers={"X-API-Key": API_KEY}, name="/v1/verify", catch_response=True) as r:
            if _http_failure(r, "verify", 200):
                return
            if bool(r.json().get("is_identical")) != same:
                r.failure(f"{name}: wrong answer, expected is_identical={same}")
                return
            r.success()
