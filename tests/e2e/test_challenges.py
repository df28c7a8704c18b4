"""Active challenges over real HTTP with the real models: /start, /process, /complete,
/status/{id}, /stats, /health.

The server stamps frames with its own clock, so nothing here may depend on how fast this machine
is: a frame is sent ``SPACING_S`` after the *answer* to the previous one (the server's two
timestamps are then always more than ``SPACING_S`` apart, well over 1 / challenge_max_fps,
whatever the scheduling delays); the step and face-missing timeouts are set far beyond what a
replay needs on a busy machine (the unit tests drive those rules on a fake clock); and "too fast"
is tested on a server whose challenge_max_fps is so low that no delay can make a second frame
legal.

The blink and head-turn tests replay the real dev video through the landmark models.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from e2e_conftest import MEDIA, create_key, key_usage, start_server

pytestmark = pytest.mark.e2e

ADMIN_KEY = "lka_e2e-challenges-admin-key-0123456789"
ADMIN_ENV = {
    "LIVENESS_ADMIN_KEY_SHA256": hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
    # Replays take as long as the machine makes them: no step or face-missing timeout may fire.
    "LIVENESS_CHALLENGE_STEP_TIMEOUT_S": "3600",
    "LIVENESS_CHALLENGE_FACE_MISSING_S": "3600",
    "LIVENESS_JWT_SECRET": "e2e-challenge-result-secret-0123456789abcdef",
}
# One frame per 1000 s: after the first frame, a second one is too fast for the next ~500 s.
SLOW_ENV = {**ADMIN_ENV, "LIVENESS_CHALLENGE_MAX_FPS": "0.001", "LIVENESS_WORKERS": "1"}
VIDEO = MEDIA / "videos" / "jomariya_real_1.mp4"
GIF = MEDIA / "videos" / "silentface_demo.gif"
T1 = MEDIA / "images" / "silentface_image_T1.jpg"
SPACING_S = 0.1  # after each answer: server-side gaps > 0.1 s, the default cap is 15 fps

def jpeg(bgr: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def video_frames(path: Path, first: int = 0, last: int | None = None, step: int = 1) -> list[tuple[int, bytes]]:
    import av

    out = []
    with av.open(str(path)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if last is not None and i > last:
                break
            if i >= first and (i - first) % step == 0:
                out.append((i, jpeg(fr.to_ndarray(format="bgr24"))))
    return out


def _serve(tmp_path_factory, name: str, env: dict[str, str]) -> Iterator[tuple[str, str, Path]]:
    d = tmp_path_factory.mktemp(name)
    db = d / "keys.sqlite3"
    key = create_key(db, 100)
    srv = start_server(db, d, env)
    try:
        yield srv.url, key, db
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def chal(tmp_path_factory) -> Iterator[tuple[str, str, Path]]:
    yield from _serve(tmp_path_factory, "challenges", ADMIN_ENV)


@pytest.fixture(scope="module")
def slow_chal(tmp_path_factory) -> Iterator[tuple[str, str, Path]]:
    """A server with challenge_max_fps 0.001 (SLOW_ENV)."""
    yield from _serve(tmp_path_factory, "challenges-slow", SLOW_ENV)


def post(url: str, path: str, key: str | None, doc: dict, admin: bool = False) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    if admin:
        headers["X-Admin-Key"] = ADMIN_KEY
    return httpx.post(url + path, json=doc, headers=headers, timeout=60)


def start(url: str, key: str, challenges: list[str] | None = None) -> str:
    r = post(url, "/start", key, {"challenges": challenges} if challenges else {}, admin=bool(challenges))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"session_id", "instruction", "current_step", "total_steps", "expires_in_minutes"}
    return body["session_id"]


def send_paced(url: str, key: str, sid: str, frames: list[bytes], spacing: float = SPACING_S,
               stop_when_complete: bool = True) -> list[dict]:
    """One frame at a time, each ``spacing`` s after the answer to the previous one: the server
    stamped that one before answering and stamps this one after receiving it, so its gap is
    > ``spacing`` however late either request was scheduled."""
    answers = []
    for i, data in enumerate(frames):
        if i:
            time.sleep(spacing)
        r = post(url, "/process", key, {"session_id": sid, "image": base64.b64encode(data).decode()})
        assert r.status_code == 200, r.text
        answers.append(r.json())
        if answers[-1]["verification_failed"] or (stop_when_complete and answers[-1]["verification_complete"]):
            break
    return answers


def complete(url: str, key: str, sid: str) -> dict:
    r = post(url, "/complete", key, {"session_id": sid})
    assert r.status_code == 200, r.text
    return r.json()


def test_health_and_stats(chal):
    url, key, _ = chal
    assert httpx.get(url + "/health").json()["status"] == "healthy"
    stats = httpx.get(url + "/stats", headers={"X-API-Key": key}).json()
    assert {"active_sessions", "completed_sessions", "failed_sessions"} <= set(stats)


def test_start_draws_random_steps_and_guards_explicit_list(chal):
    url, key, _ = chal
    r = post(url, "/start", key, {})
    assert r.status_code == 200 and r.json()["total_steps"] == 3
    r = post(url, "/start", key, {"challenges": ["blink"]})  # no admin key
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_key", r.text
    r = post(url, "/start", key, {"challenges": ["levitate"]}, admin=True)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    r = post(url, "/start", None, {})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_real_video_completes_blink(chal):
    url, key, db = chal
    used = key_usage(key)["used"]
    sid = start(url, key, ["blink"])
    assert key_usage(key)["used"] == used + 1  # one unit per session, at the start
    frames = [f for _, f in video_frames(VIDEO, 60, 320, step=2)]
    answers = send_paced(url, key, sid, frames, spacing=0.1)
    assert answers[-1]["verification_complete"], answers[-1]
    done = complete(url, key, sid)
    assert done["verdict"] == "passed", done
    assert key_usage(key)["used"] == used + 1  # frames and the verdict were paid for by the start


def test_real_video_completes_head_turns(chal):
    url, key, _ = chal
    sid = start(url, key, ["turn_left", "turn_right"])
    frames = [f for _, f in video_frames(VIDEO, 0, None, step=3)]
    answers = send_paced(url, key, sid, frames)
    assert answers[-1]["verification_complete"], answers[-1]
    assert complete(url, key, sid)["verdict"] == "passed"


def test_still_photo_never_blinks(chal):
    url, key, _ = chal
    sid = start(url, key, ["blink"])
    answers = send_paced(url, key, sid, [T1.read_bytes()] * 12)
    assert all(a["face_detected"] for a in answers)
    assert not any(a["step_completed"] for a in answers)
    done = complete(url, key, sid)
    assert done["verdict"] == "failed" and "steps_incomplete" in done["reasons"], done


@pytest.mark.parametrize("segment,first,last", [("replay", 33, 61), ("print", 62, 87)])
def test_gif_spoof_segments_fail_passive(chal, segment, first, last):
    url, key, _ = chal
    sid = start(url, key, ["blink"])
    frames = [f for _, f in video_frames(GIF, first, last)]
    answers = send_paced(url, key, sid, frames, spacing=0.1, stop_when_complete=False)
    assert not answers[-1]["verification_failed"], answers[-1]  # same face throughout: no identity jump
    done = complete(url, key, sid)
    assert done["verdict"] == "failed" and "passive_score_low" in done["reasons"], done
    assert done["passive_score"] < 0.5


def test_gif_real_segment_passes_passive(chal):
    url, key, _ = chal
    sid = start(url, key, ["blink"])
    frames = [f for _, f in video_frames(GIF, 0, 32)]
    send_paced(url, key, sid, frames, spacing=0.1, stop_when_complete=False)
    done = complete(url, key, sid)
    assert "passive_score_low" not in done["reasons"] and done["passive_score"] >= 0.5, done
    # the result token is verifiable offline with the configured secret
    import jwt

    claims = jwt.decode(done["result_token"], ADMIN_ENV["LIVENESS_JWT_SECRET"], algorithms=["HS256"])
    assert claims["sid"] == sid and claims["verdict"] == done["verdict"] and claims["typ"] == "challenge_result"


def test_gif_cut_from_real_to_replay_is_identity_change(chal):
    url, key, _ = chal
    sid = start(url, key, ["blink"])
    frames = [f for _, f in video_frames(GIF, 28, 36)]
    answers = send_paced(url, key, sid, frames, spacing=0.1)
    assert answers[-1]["verification_failed"] and answers[-1]["reason"] == "identity_changed", answers[-1]
    r = post(url, "/process", key, {"session_id": sid, "image": base64.b64encode(frames[0]).decode()})
    assert r.status_code == 409 and r.json()["error"]["code"] == "session_finished"


def test_errors_unknown_foreign_malformed_too_fast(slow_chal):
    url, key, db = slow_chal
    other = create_key(db, 10)
    sid = start(url, key, ["blink"])
    frame = base64.b64encode(T1.read_bytes()).decode()
    r = post(url, "/process", key, {"session_id": "no-such-session", "image": frame})
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    r = post(url, "/process", other, {"session_id": sid, "image": frame})
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    r = httpx.get(f"{url}/status/{sid}", headers={"X-API-Key": other})
    assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
    r = post(url, "/process", key, {"session_id": sid, "image": "%%% not base64 %%%"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_base64", r.text
    r = post(url, "/process", key, {"session_id": sid, "image": base64.b64encode(b"\xff\xd8\xff garbage" * 50).decode()})
    assert r.status_code in (400, 415) and r.json()["error"]["code"] in ("corrupt_image", "unsupported_format"), r.text
    assert httpx.get(f"{url}/status/{sid}", headers={"X-API-Key": key}).json()["frames"] == 0  # bad frames: no trace
    # Two frames at once: one is processed, the other refused as too fast (session unchanged by
    # it).  At 0.001 fps that holds for any interleaving and any delay between them.
    results: list[httpx.Response] = []

    def one() -> None:
        results.append(post(url, "/process", key, {"session_id": sid, "image": frame}))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 429], [r.text for r in results]
    assert next(r for r in results if r.status_code == 429).json()["error"]["code"] == "frame_too_fast"
    status = httpx.get(f"{url}/status/{sid}", headers={"X-API-Key": key}).json()
    assert status["frames"] == 1 and status["total_steps"] == 1
    # ... and a frame sent after both answers is still too fast
    r = post(url, "/process", key, {"session_id": sid, "image": frame})
    assert r.status_code == 429 and r.json()["error"]["code"] == "frame_too_fast", r.text
    assert httpx.get(f"{url}/status/{sid}", headers={"X-API-Key": key}).json()["frames"] == 1


def test_restart_mid_session_and_expiry(tmp_path):
    db = tmp_path / "keys.sqlite3"
    key = create_key(db, 10)
    first = start_server(db, tmp_path, {**ADMIN_ENV, "LIVENESS_WORKERS": "1"})
    try:
        sid = start(first.url, key, ["blink", "turn_left"])
        send_paced(first.url, key, sid, [T1.read_bytes()] * 3)
    finally:
        first.stop()
    second = start_server(db, tmp_path, {**ADMIN_ENV, "LIVENESS_WORKERS": "1", "LIVENESS_CHALLENGE_SESSION_TTL_S": "2"})
    try:
        before = httpx.get(f"{second.url}/status/{sid}", headers={"X-API-Key": key}).json()
        assert before["frames"] == 3 and before["status"] == "active", before
        send_paced(second.url, key, sid, [T1.read_bytes()])
        assert httpx.get(f"{second.url}/status/{sid}", headers={"X-API-Key": key}).json()["frames"] == 4
        short = start(second.url, key, ["blink"])
        time.sleep(2.5)
        for path, doc in (("/process", {"session_id": short, "image": base64.b64encode(T1.read_bytes()).decode()}),
                          ("/complete", {"session_id": short})):
            r = post(second.url, path, key, doc)
            assert r.status_code == 410 and r.json()["error"]["code"] == "session_expired", r.text
        assert key_usage(key)["used"] == 2  # the two starts; expiry charges nothing more
    finally:
        second.stop()
