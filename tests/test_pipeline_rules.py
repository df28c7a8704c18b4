"""The passive pipeline's rules on a fake backend (tests/fakes.py): quality flags, the multi-face
policy, face acquisition order, fusion of the anti-spoof models, and a worker's routing refresh
on a fake clock.  No model is loaded and ONNX Runtime is never imported: the detector "finds" the
boxes a test chooses and each classifier answers the p(live) it chooses, through the real
configs, crops, post-processing and fusion."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from liveness.errors import MULTIPLE_FACES, NO_FACE, LivenessError
from liveness.pipeline import FACE_CUT_OFF, FACE_TOO_SMALL, MULTIPLE_FACES_FLAG, LivenessResult, PassivePipeline
from liveness.settings import Settings
from tests.conftest import REPO
from tests.fakes import MODEL_REPOSITORY, Box, FakeBackend, FakeClock, retinaface_responder

W, H = 640, 480  # the test image
FACE = Box(220, 120, 200, 240)  # well inside the image, big enough


@pytest.fixture(scope="module")
def image() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((H, W, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def executor():
    with ThreadPoolExecutor(2) as pool:
        yield pool


def check(image: bytes, executor, faces: list[Box], *, p: dict[str, float] | None = None,
          **settings) -> tuple[LivenessResult, FakeBackend]:
    p = {"minifasnet_v2": 0.9, "minifasnet_v1se": 0.9, **(p or {})}
    backend = FakeBackend(retinaface=retinaface_responder(faces, image_size=(W, H)), **p)
    pipeline = PassivePipeline(backend, Settings(model_repository=MODEL_REPOSITORY, **settings), executor)
    versions = {m: 1 for m in pipeline.model_names}
    return asyncio.run(pipeline.check_bytes(image, versions)), backend


def refused(image: bytes, executor, faces: list[Box], **settings) -> tuple[LivenessError, FakeBackend]:
    backend = FakeBackend(retinaface=retinaface_responder(faces, image_size=(W, H)))
    pipeline = PassivePipeline(backend, Settings(model_repository=MODEL_REPOSITORY, **settings), executor)
    with pytest.raises(LivenessError) as exc:
        asyncio.run(pipeline.check_bytes(image, {m: 1 for m in pipeline.model_names}))
    return exc.value, backend


# ----------------------------------------------------------------------------- the fake itself


def test_the_fake_detector_gives_back_exactly_the_chosen_boxes(image, executor):
    r, backend = check(image, executor, [Box(37, 51, 73, 91, 0.8), Box(400, 200, 150, 170, 0.97)])
    assert (r.face.x, r.face.y, r.face.w, r.face.h) == (400, 200, 150, 170)  # the biggest
    assert r.face.score == pytest.approx(0.97) and r.faces_found == 2
    # the real configs decide the inputs: RetinaFace at ~192x192 area, both crops 80x80
    assert [(m, s[2:]) for m, _, s in backend.calls] == [
        ("retinaface", (166, 221)), ("minifasnet_v2", (80, 80)), ("minifasnet_v1se", (80, 80))]
    assert [m.name for m in r.models] == ["retinaface", "minifasnet_v2", "minifasnet_v1se"]


def test_the_fake_runs_without_onnxruntime():
    code = (
        "import asyncio, sys\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import cv2, numpy as np\n"
        "import liveness.app, liveness.video.check\n"
        "from liveness.pipeline import PassivePipeline\n"
        "from liveness.settings import Settings\n"
        "from tests.fakes import Box, FakeBackend, retinaface_responder, MODEL_REPOSITORY\n"
        "b = FakeBackend(retinaface=retinaface_responder([Box(0.3, 0.3, 0.4, 0.4)]))\n"
        "p = PassivePipeline(b, Settings(model_repository=MODEL_REPOSITORY), ThreadPoolExecutor(1))\n"
        "jpeg = cv2.imencode('.jpg', np.full((240, 320, 3), 128, np.uint8))[1].tobytes()\n"
        "r = asyncio.run(p.check_bytes(jpeg, {m: 1 for m in p.model_names}))\n"
        "assert r.is_live, r\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'onnxruntime']\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ----------------------------------------------------------------------------- quality flags


@pytest.mark.parametrize(
    "faces,flags",
    [
        ([FACE], ()),
        ([Box(300, 200, 63, 90)], (FACE_TOO_SMALL,)),  # shorter side 63 < min_face_size 64
        ([Box(300, 200, 64, 64)], ()),
        ([Box(6, 100, 200, 240)], (FACE_CUT_OFF,)),  # within the margin: max(2, 1% of 640 = 6.4) px
        ([Box(7, 100, 200, 240)], ()),
        ([Box(400, 200, 240, 200)], (FACE_CUT_OFF,)),  # right edge at 640
        ([Box(100, 300, 200, 180)], (FACE_CUT_OFF,)),  # bottom edge at 480
        ([Box(0, 0, 50, 40)], (FACE_TOO_SMALL, FACE_CUT_OFF)),
        ([FACE, Box(20, 20, 60, 60)], (MULTIPLE_FACES_FLAG,)),  # a small second face: flagged, not refused
    ],
)
def test_quality_flags(image, executor, faces, flags):
    r, _ = check(image, executor, faces)
    assert r.quality_flags == flags
    assert r.is_live  # flags never change the verdict


def test_min_face_size_is_a_setting(image, executor):
    r, _ = check(image, executor, [Box(300, 200, 90, 100)], min_face_size=100)
    assert r.quality_flags == (FACE_TOO_SMALL,)


# ----------------------------------------------------------------------------- multi-face policy


BIG = Box(40, 60, 200, 240)  # area 48000
RIVAL = Box(380, 100, 120, 100)  # area 12000 = 0.25 of BIG
SMALL = Box(380, 100, 119, 100)  # just under a quarter


def test_reject_refuses_a_second_face_of_a_quarter_the_area(image, executor):
    err, backend = refused(image, executor, [BIG, RIVAL], multi_face_policy="reject")
    assert err.kind is MULTIPLE_FACES and err.details == {"faces": 2}
    assert backend.models_called() == ["retinaface"]  # refused before any classifier ran


def test_reject_ignores_a_background_face(image, executor):
    r, _ = check(image, executor, [BIG, SMALL], multi_face_policy="reject")
    assert (r.face.x, r.face.w) == (40, 200) and r.faces_found == 2
    assert r.quality_flags == (MULTIPLE_FACES_FLAG,)


def test_the_min_area_ratio_is_a_setting(image, executor):
    err, _ = refused(image, executor, [BIG, SMALL], multi_face_policy="reject", multi_face_min_area_ratio=0.2)
    assert err.kind is MULTIPLE_FACES
    r, _ = check(image, executor, [BIG, RIVAL], multi_face_policy="reject", multi_face_min_area_ratio=0.3)
    assert r.faces_found == 2


@pytest.mark.parametrize("order", [[BIG, RIVAL], [RIVAL, BIG]])
def test_biggest_takes_the_biggest_face_whatever_the_detector_order(image, executor, order):
    r, _ = check(image, executor, order, multi_face_policy="biggest")
    assert (r.face.x, r.face.y, r.face.w, r.face.h) == (40, 60, 200, 240)
    assert r.faces_found == 2 and r.quality_flags == (MULTIPLE_FACES_FLAG,)


def test_detector_confidence_cut(image, executor):
    r, _ = check(image, executor, [BIG, Box(380, 100, 120, 100, score=0.5)])  # under detector_confidence 0.6
    assert r.faces_found == 1 and r.quality_flags == ()


# ----------------------------------------------------------------------------- acquisition


def test_no_face_tries_every_fallback_in_order_then_refuses(image, executor):
    err, backend = refused(image, executor, [])
    assert err.kind is NO_FACE
    # reference RetinaFace pass, RetinaFace at 128x128 area, YuNet at 640 then 960 (padded to /32)
    assert [(m, s[2:]) for m, _, s in backend.calls] == [
        ("retinaface", (166, 221)), ("retinaface", (110, 147)), ("yunet", (480, 640)), ("yunet", (480, 640))]


def test_without_fallbacks_only_the_reference_pass_runs(image, executor):
    err, backend = refused(image, executor, [], detector_fallback=False)
    assert err.kind is NO_FACE and backend.models_called() == ["retinaface"]


def test_a_face_only_the_128_px_pass_finds_is_used(image, executor):
    def at_128_only(x: np.ndarray) -> list[Box]:
        return [Box(0.3, 0.25, 0.4, 0.5)] if x.shape[2] * x.shape[3] < 128 * 128 * 1.2 else []

    backend = FakeBackend(retinaface=retinaface_responder(at_128_only))
    pipeline = PassivePipeline(backend, Settings(model_repository=MODEL_REPOSITORY), executor)
    r = asyncio.run(pipeline.check_bytes(image, {m: 1 for m in pipeline.model_names}))
    assert r.acquisition == "retinaface_128" and r.faces_found == 1
    assert backend.models_called() == ["retinaface", "minifasnet_v2", "minifasnet_v1se"]


# ----------------------------------------------------------------------------- fusion


P = {"minifasnet_v2": 0.8, "minifasnet_v1se": 0.3}


@pytest.mark.parametrize(
    "settings,score,live",
    [
        ({}, 0.55, True),  # mean (upstream's rule)
        ({"fusion": "min"}, 0.3, False),
        ({"fusion": "weighted", "fusion_weights": {"minifasnet_v2": 3.0, "minifasnet_v1se": 1.0}}, 0.675, True),
        ({"fusion": "weighted", "fusion_weights": {"minifasnet_v2": 1.0, "minifasnet_v1se": 3.0}}, 0.425, False),
        ({"threshold": 0.6}, 0.55, False),
        ({"antispoof_models": ("minifasnet_v1se",)}, 0.3, False),
    ],
)
def test_fusion_through_the_pipeline(image, executor, settings, score, live):
    r, _ = check(image, executor, [FACE], p=P, **settings)
    assert r.model_scores == pytest.approx({m: P[m] for m in settings.get("antispoof_models", P)}, abs=1e-6)
    assert list(r.model_scores) == list(settings.get("antispoof_models", P))  # antispoof_models order
    assert r.score == pytest.approx(score, abs=1e-6) and r.is_live is live
    assert r.threshold == settings.get("threshold", 0.5)


def test_a_third_model_is_configuration(image, executor):
    """SuriAI's MiniFASNetV2-SE (2 classes, sigmoid_diff, 128 px, square_reflect crop): only its
    config.pbtxt says so, and the fake answers through the same post-processing."""
    models = ("minifasnet_v2", "minifasnet_v1se", "suriai_minifasnetv2se")
    r, backend = check(image, executor, [FACE], p={**P, "suriai_minifasnetv2se": 0.1}, antispoof_models=models)
    assert r.model_scores == pytest.approx({**P, "suriai_minifasnetv2se": 0.1}, abs=1e-6)
    assert r.score == pytest.approx((0.8 + 0.3 + 0.1) / 3, abs=1e-6) and not r.is_live
    assert ("suriai_minifasnetv2se", 1, (1, 3, 128, 128)) in backend.calls


def test_per_crop_scores_follow_the_input(image, executor):
    """A classifier fake may score what it is given: here the crop's brightness."""
    p = {"minifasnet_v2": lambda crop: float(crop.mean()) / 255, "minifasnet_v1se": 0.5}
    r, _ = check(image, executor, [FACE], p=p)
    assert r.model_scores["minifasnet_v2"] == pytest.approx(128 / 255, abs=0.02)


# ----------------------------------------------------------------------------- routing refresh


def test_a_worker_follows_the_policy_store_once_per_interval_on_its_clock(tmp_path):
    """What the rollout e2e test waits for, on a fake clock: a stored policy change is picked
    up at the first refresh after ``refresh_interval_s``, the new version is loaded before the
    swap, a forced refresh is immediate, and a version that cannot load keeps the old routing."""
    from liveness.rollout.manager import LiveRouting, PolicyBook
    from liveness.rollout.policy import ModelPolicy
    from liveness.rollout.store import open_policy_store

    store = open_policy_store(str(tmp_path / "policy.sqlite3"), None)
    book = PolicyBook(MODEL_REPOSITORY, ["retinaface", "minifasnet_v2"],
                      {"minifasnet_v2": ModelPolicy("pin", version=1)}, store)
    backend = FakeBackend(preload=False)
    clock = FakeClock()
    routing = LiveRouting(book, backend, refresh_interval_s=1.0, clock=clock)
    assert backend.loads == [("minifasnet_v2", 1), ("retinaface", 1)]

    def version() -> int:
        return routing.router.route("some-key").primary["minifasnet_v2"]

    async def scenario():
        store.set("minifasnet_v2", ModelPolicy("pin", version=2), previous=1)
        await routing.refresh()
        assert version() == 1  # no time has passed: the store is not even read
        clock.advance(0.999)
        await routing.refresh()
        assert version() == 1
        clock.advance(0.001)
        await routing.refresh()
        assert version() == 2 and ("minifasnet_v2", 2) in backend.loads  # loaded, then routed
        store.set("minifasnet_v2", ModelPolicy("pin", version=1), previous=None)
        await routing.refresh(force=True)  # the admin call's own worker: at once
        assert version() == 1
        store.set("minifasnet_v2", ModelPolicy("pin", version=9), previous=1)  # not on disk
        clock.advance(5)
        await routing.refresh()
        assert version() == 1  # cannot be served here: the previous routing stays

    try:
        asyncio.run(scenario())
    finally:
        store.close()
