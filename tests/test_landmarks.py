"""Landmark models (face mesh, iris) and the facial signals active challenges use, on real media."""

from __future__ import annotations

import asyncio
import math

import cv2
import numpy as np
import onnx
import pytest

from liveness.app import LivenessApp
from liveness.challenges import steps
from liveness.landmarks import signals as S
from liveness.landmarks.measure import measure_face
from liveness.settings import Settings

VIDEO = "videos/jomariya_real_1.mp4"
VIDEO_STEP = 2  # 15 fps of the 30 fps clip


@pytest.fixture(scope="module")
def app(model_repository, tmp_path_factory):
    # YuNet: the reference RetinaFace misses the scanned landmark prints.
    a = LivenessApp(
        Settings(
            auth_enabled=False,
            detector="yunet",
            model_repository=model_repository,
            db_path=tmp_path_factory.mktemp("db") / "l.sqlite3",
            model_policy_file=model_repository.parent / "model_policy.toml",
        )
    )
    yield a
    a.close()


def _measure(app: LivenessApp, bgr: np.ndarray) -> S.FaceSignals:
    async def go():
        versions = app.routing.router.route(None).primary
        prepared = await app.pipeline.prepare_bgr(bgr, versions)
        return await measure_face(app, bgr, prepared.face, versions)

    return asyncio.run(go())


@pytest.mark.parametrize("name,dims", [("facemesh", (3, 192, 192)), ("iris", (3, 64, 64))])
def test_landmark_models_have_dynamic_batch(model_repository, name, dims):
    m = onnx.load(str(model_repository / name / "1" / "model.onnx"))
    (inp,) = m.graph.input
    shape = inp.type.tensor_type.shape.dim
    assert shape[0].dim_param and not shape[0].dim_value
    assert tuple(d.dim_value for d in shape[1:]) == dims
    for out in m.graph.output:
        assert out.type.tensor_type.shape.dim[0].dim_param
    cfg = (model_repository / name / "config.pbtxt").read_text()
    assert "max_batch_size: 16" in cfg and "max_queue_delay_microseconds: 0" in cfg
    assert (model_repository / name / "1" / "parity.npz").is_file()


def test_app_loads_and_routes_the_landmark_models(app):
    assert {"facemesh", "iris"} <= set(app.models)
    primary = app.routing.router.route(None).primary
    assert primary["facemesh"] == 1 and primary["iris"] == 1


TH = steps.Thresholds()  # the thresholds the challenge service runs


def _replay(step: str, frames) -> list[int]:
    """Indices where ``step``'s detector (the service's rules) fires over (index, t, signals)
    frames; the detector restarts after each hit, as the next step of a session would."""
    hits, state, base = [], {}, {}
    for i, t, sig in frames:
        if steps.detect(step, state, sig, t, base, TH):
            hits.append(i)
            state = {}
    return hits


def test_eye_openness_separates_open_closed_and_wink(app, media):
    d = media / "landmarks"
    oo = _measure(app, cv2.imread(str(d / "faceonnx_blink_open_open.jpg")))
    cc = _measure(app, cv2.imread(str(d / "faceonnx_blink_closed_closed.jpg")))
    co = _measure(app, cv2.imread(str(d / "faceonnx_blink_closed_open.jpg")))
    assert min(oo.left_eye_openness, oo.right_eye_openness) > TH.eye_open, oo
    assert max(cc.left_eye_openness, cc.right_eye_openness) < TH.eye_closed, cc
    closed, opened = sorted((co.left_eye_openness, co.right_eye_openness))
    assert closed < TH.eye_closed and opened > TH.eye_open, co  # a wink
    assert all(s.presence > 0.9 for s in (oo, cc, co))
    # open -> wink -> open completes the wink step; open -> both closed -> open is a blink, not a wink
    assert _replay("wink", [(0, 0.0, oo), (1, 0.1, co), (2, 0.2, oo)]) == [2]
    assert _replay("wink", [(0, 0.0, oo), (1, 0.1, cc), (2, 0.2, oo)]) == []
    assert _replay("blink", [(0, 0.0, oo), (1, 0.1, cc), (2, 0.2, oo)]) == [2]
    # Wide-open laugh vs closed-lip smile
    assert co.mouth_open > TH.mouth_opened >= oo.mouth_open


@pytest.fixture(scope="module")
def video_signals(app, media):
    cap = cv2.VideoCapture(str(media / VIDEO))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    out, i = [], 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % VIDEO_STEP == 0:
                t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 or i / fps
                out.append((i, t, _measure(app, frame)))
            i += 1
    finally:
        cap.release()
    assert len(out) > 300
    return out


def test_blink_step_finds_blinks_in_the_real_video(video_signals):
    blinks = _replay("blink", video_signals)
    assert len(blinks) >= 1, blinks
    known = (86, 110, 230, 276, 294, 554, 598)
    assert any(abs(b - k) <= 15 for b in blinks for k in known), blinks


def test_yaw_turns_both_ways_in_the_real_video(video_signals):
    yaws = [s.yaw for _, _, s in video_signals]
    assert max(yaws) > TH.turn_deg and min(yaws) < -10.0, (min(yaws), max(yaws))
    assert _replay("turn_left", video_signals)  # centred first, then past turn_deg
    centred = [s for _, _, s in video_signals if abs(s.yaw) < TH.center_yaw_deg and abs(s.pitch) < TH.center_pitch_deg]
    assert len(centred) > len(video_signals) / 3


def test_still_photo_never_blinks(app, media):
    img = cv2.imread(str(media / "images" / "silentface_image_T1.jpg"))
    frames = []
    for k in range(30):  # 10 fps for 3 s
        s = _measure(app, img)
        assert math.isfinite(s.left_eye_openness) and min(s.left_eye_openness, s.right_eye_openness) > TH.eye_open
        frames.append((k, k / 10.0, s))
    assert _replay("blink", frames) == []


def test_blink_step_rules():
    def sig(left: float, right: float) -> S.FaceSignals:
        return S.FaceSignals(left, right, 0.0, 0.0, 0.0, 0.1, 0.8, 0.5, 1.0)

    seq = [(0, 0.0, sig(0.4, 0.4)), (1, 0.1, sig(0.2, 0.2)), (2, 0.2, sig(0.4, 0.4))]
    assert _replay("blink", seq) == [2]
    seq = [(0, 0.0, sig(0.4, 0.4)), (1, 0.1, sig(0.2, 0.2)), (2, 1.5, sig(0.2, 0.2)), (3, 1.6, sig(0.4, 0.4))]
    assert _replay("blink", seq) == []  # closed too long: not a blink
    seq = [(0, 0.0, sig(0.4, 0.4)), (1, 0.1, sig(0.2, 0.4)), (2, 0.2, sig(0.4, 0.4))]
    assert _replay("blink", seq) == []  # one eye only (a wink) is not a blink
