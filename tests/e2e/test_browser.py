"""The /demo page end to end in headless Chromium with a fake camera, against the served Bento.

Chromium is Debian's (/usr/bin/chromium, `make browser`), driven by the Playwright Python package;
no browser is ever downloaded.  The camera is Chromium's fake capture device playing a y4m clip
(looped) that the test cuts from the dev video: a real person blinking (frames 60-240 of
jomariya_real_1.mp4, blinks near 86-120, head movement) must pass a ["blink"] session; the still
photo T1 repeated must not (failed verdict, error, or no verdict within ``STILL_WAIT_MS``).

The camera runs in real time and the page drops frames while the server is busy, so how many
frames of each blink the server sees depends on the machine's speed.  The step timeout is
therefore set far beyond a few loops of the clip (a slow machine just needs more loops to catch a
blink); the waits below are deadlines for a hung run, not expectations of speed.
The admin key (LIVENESS_ADMIN_KEY_SHA256 on the server) lets the page pick the challenges.
Screenshots go to the test's tmp dir; their paths are printed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import pytest

from e2e_conftest import MEDIA, T1, Server, create_key, start_server

CHROMIUM = Path("/usr/bin/chromium")
LIVE_VIDEO = MEDIA / "videos" / "jomariya_real_1.mp4"
LIVE_FRAMES = (60, 240)  # 6 s at 30 fps around the blinks (86-120)
ADMIN_KEY = "e2e-browser-admin-key"
STEP_TIMEOUT_S = 150  # the server's challenge_step_timeout_s: ~25 loops of the 6 s live clip
RESULT_TIMEOUT_MS = (STEP_TIMEOUT_S + 60) * 1000  # a verdict always comes by then (pass, or the step timeout)
STILL_WAIT_MS = 30_000  # a still photo shown this long must not have passed

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' (playwright)")


def _require_stack() -> None:
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.fail("Debian chromium missing: run `make browser` (apt-get install -y chromium)")


# ----------------------------------------------------------------------------- fake camera clips


def write_y4m(images: Iterable, path: Path, fps: int = 30) -> Path:
    """PIL images -> an uncompressed YUV4MPEG2 clip (what --use-file-for-fake-video-capture plays)."""
    import av

    out = av.open(str(path), "w", format="yuv4mpegpipe")
    stream = None
    try:
        for img in images:
            if stream is None:
                stream = out.add_stream("rawvideo", rate=fps)
                stream.width, stream.height = img.width - img.width % 2, img.height - img.height % 2
                stream.pix_fmt = "yuv420p"
            frame = av.VideoFrame.from_image(img).reformat(width=stream.width, height=stream.height, format="yuv420p")
            for packet in stream.encode(frame):
                out.mux(packet)
        assert stream is not None, "no frames"
        for packet in stream.encode():
            out.mux(packet)
    finally:
        out.close()
    return path


def video_images(path: Path, start: int, stop: int) -> Iterator:
    import av

    if not path.is_file():
        pytest.fail(f"test media missing: {path}")
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= stop:
                break
            if i >= start:
                yield frame.to_image()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    d = tmp_path_factory.mktemp("fake-camera")
    still = Image.open(T1).convert("RGB")
    return {
        "live": write_y4m(video_images(LIVE_VIDEO, *LIVE_FRAMES), d / "live_blink.y4m"),
        "still": write_y4m([still] * 60, d / "still_t1.y4m"),
    }


# ----------------------------------------------------------------------------- server + browser


@pytest.fixture(scope="module")
def admin_server(db_path: Path, e2e_dir: Path) -> Iterator[Server]:
    _require_stack()
    sha = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    # Sessions draw their challenges from the pool: one blink step, which the live clip does.
    srv = start_server(db_path, e2e_dir, {"LIVENESS_ADMIN_KEY_SHA256": sha,
                                          "LIVENESS_CHALLENGE_POOL": json.dumps(["blink"]),
                                          "LIVENESS_CHALLENGE_STEPS": "1",
                                          "LIVENESS_CHALLENGE_STEP_TIMEOUT_S": str(STEP_TIMEOUT_S),
                                          "LIVENESS_CHALLENGE_FACE_MISSING_S": str(STEP_TIMEOUT_S)})
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def pw() -> Iterator:
    with playwright_sync.sync_playwright() as p:
        yield p


def run_demo(pw, server: Server, clip: Path, api_key: str | None, wait_ms: int, token: str | None = None) -> dict:
    """Open /demo with ``clip`` as the camera, start a ["blink"] session (with the API key and
    admin key, or as an app server sends its user: /demo#token=<session token>) and wait for
    an outcome.

    Returns {"verdict", "error", "events", "page"} (page still open; the caller closes the browser)."""
    browser = pw.chromium.launch(
        executable_path=str(CHROMIUM), headless=True,
        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={clip}"],
    )
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    events: list[dict] = []

    def on_socket(ws) -> None:
        ws.on("framereceived", lambda payload: events.append(json.loads(payload)) if isinstance(payload, str) else None)

    page.on("websocket", on_socket)
    if token is not None:
        page.goto(f"{server.url}/demo#token={token}")
    else:
        page.goto(server.url + "/demo")
        page.get_by_label("API key", exact=True).fill(api_key)
        page.locator("summary").click()
        page.get_by_label("Challenges").fill("blink")
        page.get_by_label("Admin key", exact=True).fill(ADMIN_KEY)
    page.get_by_role("button", name="Start").click()
    outcome = {"verdict": None, "error": None, "events": events, "page": page, "browser": browser}
    try:
        page.wait_for_selector("#result:not([hidden]), #error:not([hidden])", timeout=wait_ms)
    except playwright_sync.TimeoutError:
        return outcome
    if page.is_visible("#result"):
        outcome["verdict"] = page.get_attribute("#verdict", "data-verdict")
    if page.is_visible("#error"):
        outcome["error"] = page.text_content("#error")
    return outcome


@contextmanager
def demo(pw, server: Server, clip: Path, api_key: str | None, wait_ms: int, shot: Path,
         capsys: pytest.CaptureFixture, token: str | None = None) -> Iterator[dict]:
    """``run_demo``, then a full-page screenshot at ``shot`` (its path printed); yields the
    outcome and closes the browser after the block, whatever the block asserts."""
    outcome = run_demo(pw, server, clip, api_key, wait_ms, token=token)
    try:
        outcome["page"].screenshot(path=str(shot), full_page=True)
        with capsys.disabled():
            print(f"\n[browser] screenshot: {shot}")
        yield outcome
    finally:
        outcome["browser"].close()


def summary(events: list[dict]) -> str:
    kinds = [e.get("type") for e in events]
    counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    tail = [e for e in events if e.get("reason") != "frame_too_fast"][-6:]
    return f"events {counts}; last: {tail}"


# ----------------------------------------------------------------------------- tests


def test_live_person_blinks_and_passes(pw, admin_server, db_path, clips, tmp_path, capsys):
    key = create_key(db_path, limit=10_000)
    with demo(pw, admin_server, clips["live"], key, RESULT_TIMEOUT_MS, tmp_path / "demo_live.png", capsys) as outcome:
        events = outcome["events"]
        assert events and events[0]["type"] == "challenge", summary(events)
        assert events[0]["total_steps"] == 1 and events[0]["session_id"]
        assert any(e["type"] == "feedback" and e.get("face_detected") for e in events), summary(events)
        assert outcome["error"] is None, f"{outcome['error']} - {summary(events)}"
        assert outcome["verdict"] == "passed", f"verdict {outcome['verdict']!r} - {summary(events)}"
        result = next(e for e in events if e["type"] == "result")
        assert result["steps_completed"] == 1 and result["result_token"], result


def test_still_photo_does_not_pass(pw, admin_server, db_path, clips, tmp_path, capsys):
    key = create_key(db_path, limit=10_000)
    with demo(pw, admin_server, clips["still"], key, STILL_WAIT_MS, tmp_path / "demo_still.png", capsys) as outcome:
        events = outcome["events"]
        assert events and events[0]["type"] == "challenge", summary(events)
        assert outcome["verdict"] != "passed", summary(events)
        assert not any(e["type"] == "result" and e.get("verdict") == "passed" for e in events)
        with capsys.disabled():
            print(f"[browser] still photo: verdict={outcome['verdict']!r} error={outcome['error']!r}")


def test_app_server_session_token_in_the_browser(pw, admin_server, db_path, clips, tmp_path, capsys):
    """The app server creates a session and sends its user to /demo#token=...: the browser never
    holds the API key, sees no verdict, and the app server reads realface from the session."""
    import httpx

    key = create_key(db_path, limit=10)
    r = httpx.post(admin_server.url + "/v1/sessions", json={"mode": "challenge"}, headers={"X-API-Key": key},
                   timeout=60)
    assert r.status_code == 200, r.text
    session = r.json()
    with demo(pw, admin_server, clips["live"], None, RESULT_TIMEOUT_MS, tmp_path / "demo_session.png", capsys,
              token=session["auth_token"]) as outcome:
        events = outcome["events"]
        assert outcome["error"] is None, f"{outcome['error']} - {summary(events)}"
        assert outcome["verdict"] == "completed", f"verdict {outcome['verdict']!r} - {summary(events)}"
        assert "token" not in outcome["page"].url  # taken out of the address bar
        assert outcome["page"].is_hidden("#key-field")
        result = next(e for e in events if e["type"] == "result")
        assert "verdict" not in result and "result_token" not in result, result
        assert all(e.get("passive_score") is None for e in events if e["type"] == "feedback")
    doc = httpx.get(f"{admin_server.url}/v1/sessions/{session['session_id']}", headers={"X-API-Key": key},
                    timeout=30).json()
    assert doc["status"] == "ResultAvailable" and doc["result"]["decision"] == "realface", doc
