"""Video liveness end to end through the real models (no server): verdicts on the dev media,
hostile inputs, early stopping, charging."""

from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np
import pytest

import liveness.video.check as video_check
from liveness.errors import (
    CORRUPT_VIDEO,
    EMPTY_VIDEO,
    UNSUPPORTED_VIDEO,
    VIDEO_FPS_TOO_HIGH,
    VIDEO_RESOLUTION_TOO_HIGH,
    VIDEO_TIMEOUT,
    VIDEO_TOO_LARGE,
    VIDEO_TOO_LONG,
    LivenessError,
)
from liveness.video import FAILURE_TO_ACQUIRE, REJECTED, Verdict, check_video
from tests.conftest import run
from tests.video_helpers import encode, gif_segment, read_frames


@pytest.fixture(scope="module")
def videos(media):
    return media / "videos"


@pytest.fixture(scope="module")
def real_mp4(videos) -> bytes:
    return (videos / "jomariya_real_1.mp4").read_bytes()


@pytest.fixture(scope="module")
def real_frames(videos) -> list[np.ndarray]:
    return read_frames(videos / "jomariya_real_1.mp4", every=40, limit=12)


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if any frame decoding starts."""
    calls = []
    monkeypatch.setattr(video_check, "decode_selected", lambda *a, **k: calls.append(1))
    yield calls
    assert not calls, "frames were decoded although a limit should have refused the file first"


def expect_error(app, data, kind, **check_kw) -> LivenessError:
    with pytest.raises(LivenessError) as exc:
        run(check_video(app, None, data, "video/mp4", **check_kw))
    assert exc.value.kind is kind, exc.value
    return exc.value


# -- verdicts on the dev media -----------------------------------------------------------------


def test_real_mp4_is_alive_and_stops_early(app, real_mp4):
    r = run(check_video(app, None, real_mp4, "video/mp4", return_photo=True, return_normalized=True))
    assert r.alive and r.verdict is Verdict.LIVE and not r.errors
    assert r.video.frame_count == 800 and r.video.width == 368 and r.video.height == 656
    # Early stopping: 7 live frames judged, then stop; one chunk of 8 went through the models.
    assert len(r.frames) == app.settings.video_live_frames_to_stop == 7
    assert r.stopped_early and r.frames_analyzed == app.settings.video_chunk_frames < r.frames_selected == 30
    assert all(f.face_found and f.liveness >= r.threshold for f in r.frames)
    frame_nos = [f.frame_no for f in r.frames]
    assert frame_nos == sorted(frame_nos) and frame_nos[0] == 0  # time order, equidistant from the start
    assert r.average_liveness == pytest.approx(np.mean([f.liveness for f in r.frames]))
    b = r.best_face
    assert b is not None and b.quality == max(f.quality for f in r.frames)
    assert b.frame_no in frame_nos and 0 <= b.bbox[0] < b.bbox[2] <= 368 and 0 <= b.bbox[1] < b.bbox[3] <= 656
    photo = cv2.imdecode(np.frombuffer(b.photo_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert photo.shape == (656, 368, 3)
    norm = cv2.imdecode(np.frombuffer(b.normalized_png, np.uint8), cv2.IMREAD_COLOR)
    assert norm.shape == (112, 112, 3)
    # the models that judged the frames: the reference detector (every frame found by it) and the classifiers
    assert [m.name for m in r.models] == [app.pipeline.detector.model, *(c.model for c in app.pipeline.classifiers)]


@pytest.mark.parametrize(
    "segment,first,last,alive",
    [("real", 0, 32, True), ("replay", 33, 61, False), ("print", 62, 87, False)],
)
def test_demo_gif_segments(app, videos, segment, first, last, alive):
    data = gif_segment(videos / "silentface_demo.gif", first, last)
    r = run(check_video(app, None, data, "image/gif"))
    assert r.video.container == "gif" and r.video.frame_count == last - first + 1
    assert r.alive is alive
    if alive:
        assert not r.errors and r.average_liveness > 0.6
    else:
        assert r.verdict is Verdict.SPOOF
        assert [e.code for e in r.errors] == [REJECTED]
        assert sum(not f.live for f in r.frames) == app.settings.video_spoof_frames_to_stop
        assert r.average_liveness < 0.5


def test_webm_is_accepted(app, real_frames):
    data = encode(real_frames, 10, codec="libvpx", fmt="webm", options={"deadline": "realtime", "cpu-used": "8"})
    r = run(check_video(app, None, data, "video/webm"))
    assert r.video.container == "webm" and r.video.codec == "vp8"
    assert r.alive


# -- frames without a usable face -> FailureToAcquire -----------------------------------------


def test_no_face_is_failure_to_acquire(app):
    grey = [np.full((240, 320, 3), 90 + 10 * i, np.uint8) for i in range(12)]
    r = run(check_video(app, None, encode(grey, 10), "video/mp4"))
    assert not r.alive and r.verdict is Verdict.FAILURE_TO_ACQUIRE
    assert [e.code for e in r.errors] == [FAILURE_TO_ACQUIRE]
    assert len(r.frames) == app.settings.video_max_failures  # stops at the failure limit
    assert all(not f.face_found and f.reason == "no_face" and f.liveness is None for f in r.frames)
    assert r.average_liveness is None and r.best_face is None and not r.charged


def test_two_faces_under_reject_is_failure_to_acquire(app, real_frames, monkeypatch):
    monkeypatch.setattr(app.settings, "multi_face_policy", "reject")
    twins = [np.hstack([f, cv2.flip(f, 1)]) for f in real_frames]
    r = run(check_video(app, None, encode(twins, 10), "video/mp4"))
    assert not r.alive and r.verdict is Verdict.FAILURE_TO_ACQUIRE
    assert r.errors[0].code == FAILURE_TO_ACQUIRE
    assert r.errors[0].details["reasons"] == {"multiple_faces": app.settings.video_max_failures}
    assert all(f.reason == "multiple_faces" and f.face_found and f.faces_found == 2 for f in r.frames)


def test_too_few_usable_frames_is_failure_to_acquire(app, real_frames):
    # 4 real frames: no early rule can fire and 4 < video_min_selected_frames.
    r = run(check_video(app, None, encode(real_frames[:4], 10), "video/mp4"))
    assert r.verdict is Verdict.FAILURE_TO_ACQUIRE and len(r.frames) == 4 and not r.stopped_early
    assert "at least" in r.errors[0].message


# -- hostile / invalid input: refused before decoding ----------------------------------------


def test_truncated_mp4_is_corrupt(app, real_mp4, no_decoding):
    e = expect_error(app, real_mp4[: len(real_mp4) // 2], CORRUPT_VIDEO)
    assert "truncated" in e.message, e
    expect_error(app, real_mp4[:20_000], CORRUPT_VIDEO)  # cut inside the moov box


def test_zip_renamed_mp4_is_unsupported(app, no_decoding):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("clip.mp4", b"\x00" * 1000)
    e = expect_error(app, buf.getvalue(), UNSUPPORTED_VIDEO)
    assert e.details["detected"] == "zip"


@pytest.mark.parametrize(
    "data,detected",
    [(b"hello, this is not a video at all\n" * 10, "text"), (None, "jpeg")],
)
def test_text_and_jpeg_are_unsupported(app, media, no_decoding, data, detected):
    if data is None:
        data = (media / "images" / "silentface_image_T1.jpg").read_bytes()
    assert expect_error(app, data, UNSUPPORTED_VIDEO).details["detected"] == detected


def test_empty_and_oversized(app, real_mp4, monkeypatch, no_decoding):
    expect_error(app, b"", EMPTY_VIDEO)
    monkeypatch.setattr(app.settings, "video_max_bytes", 1_000_000)
    e = expect_error(app, real_mp4, VIDEO_TOO_LARGE)
    assert e.details == {"nbytes": len(real_mp4), "max_bytes": 1_000_000} and "1000000" in e.message


def test_4k_clip_is_refused_from_metadata(app, no_decoding):
    clip = encode([np.zeros((2160, 3840, 3), np.uint8)] * 2, 10)
    e = expect_error(app, clip, VIDEO_RESOLUTION_TOO_HIGH)  # no frame decoded (no_decoding), not "under 1 s"
    assert (e.details["width"], e.details["height"]) == (3840, 2160) and "3840x2160" in e.message


def test_portrait_1080p_fits_the_landscape_limit(app):
    from liveness.video.probe import VideoLimits

    assert VideoLimits().fits(1080, 1920) and not VideoLimits().fits(1200, 1921)


def test_two_minute_clip_is_too_long(app, no_decoding):
    clip = encode([np.full((64, 64, 3), 128, np.uint8)] * 120, 1)
    e = expect_error(app, clip, VIDEO_TOO_LONG)
    assert e.details["duration_s"] == pytest.approx(120, abs=1.5) and e.details["max_seconds"] == 60
    assert "60 s" in e.message


def test_high_frame_rate_is_refused(app, no_decoding):
    clip = encode([np.full((64, 64, 3), 128, np.uint8)] * 30, 60)
    e = expect_error(app, clip, VIDEO_FPS_TOO_HIGH)
    assert e.details["fps"] == pytest.approx(60, abs=1) and e.details["max_fps"] == 30


def test_decode_deadline(app, real_mp4, monkeypatch):
    monkeypatch.setattr(app.settings, "video_decode_timeout_s", 0.001)
    expect_error(app, real_mp4, VIDEO_TIMEOUT)


# -- charging ----------------------------------------------------------------------------------


def test_charging(app, real_mp4, monkeypatch, tmp_path):
    """One unit per video, reserved after the probe and kept only for a verdict (a real SQLite
    key store behind the app's admission context, its calls logged)."""
    from liveness.admission import Admission
    from liveness.keys import SqliteKeyStore

    log: list[str] = []

    class LoggedKeys(SqliteKeyStore):
        def check_credential(self, credential):
            log.append("admit")
            return super().check_credential(credential)

        def reserve_credential(self, credential):
            log.append("reserve")
            return super().reserve_credential(credential)

        def commit(self, reservation):
            log.append("commit")
            super().commit(reservation)

        def refund(self, reservation):
            log.append("refund")
            super().refund(reservation)

    keys = LoggedKeys(tmp_path / "keys.sqlite3")
    key = keys.create("video", 10).raw_key
    monkeypatch.setattr(app, "admission", Admission(keys, app.routing))  # auth on: results report the charge

    r = run(check_video(app, key, real_mp4))
    assert r.alive and r.charged and log == ["admit", "reserve", "commit"]

    log.clear()
    grey = encode([np.full((240, 320, 3), 128, np.uint8)] * 12, 10)
    r = run(check_video(app, key, grey))
    assert r.verdict is Verdict.FAILURE_TO_ACQUIRE and not r.charged
    assert log == ["admit", "reserve", "refund"]

    log.clear()
    with pytest.raises(LivenessError):
        run(check_video(app, key, real_mp4[:100_000]))
    assert log == ["admit"]  # bad input never reserves
    assert keys.usage("video").used == 1
    keys.close()
