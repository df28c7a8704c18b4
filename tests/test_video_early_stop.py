"""The video verdict's early-stopping rules through ``check_video`` on the real core (LivenessApp:
key store, charging, routing, pipeline) with a fake backend (tests/fakes.py): no model is loaded.

Each clip is made of flat frames whose grey level says what the fake models see in them:
``L`` a face the classifiers call live, ``S`` a face they call a spoof, ``N`` no face.  The frames
are judged in time order in chunks of ``video_chunk_frames`` (8); the first rule that fires
decides (7 live, 7 spoof, 5 failures), the rest of its chunk is analysed but not judged, and the
decoder stops.  None of it depends on the machine's speed."""

from __future__ import annotations

import numpy as np
import pytest

from liveness.settings import Settings
from liveness.video import FAILURE_TO_ACQUIRE, REJECTED, Verdict, check_video
from tests.conftest import run
from tests.fakes import MODEL_REPOSITORY, Box, FakeBackend, detector_image, fake_app, retinaface_responder
from tests.video_helpers import encode

LEVEL = {"L": 200, "S": 100, "N": 10}


def clip(pattern: str) -> bytes:
    return encode([np.full((240, 320, 3), LEVEL[c], np.uint8) for c in pattern], 10)


def backend() -> FakeBackend:
    def faces(x: np.ndarray) -> list[Box]:
        return [Box(0.3, 0.25, 0.4, 0.5)] if detector_image(x).mean() > 40 else []

    def p_live(crop: np.ndarray) -> float:
        return 0.9 if crop.mean() > 150 else 0.1

    return FakeBackend(retinaface=retinaface_responder(faces), minifasnet_v2=p_live, minifasnet_v1se=p_live)


@pytest.fixture
def make_app(tmp_path, monkeypatch):
    apps = []

    def make(**settings):
        s = Settings(model_repository=MODEL_REPOSITORY, db_path=tmp_path / "db.sqlite3",
                     **{"auth_enabled": False, "challenges_enabled": False, "verification_enabled": False, **settings})
        app = fake_app(s, backend(), monkeypatch)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def verdict_of(app, pattern: str, key=None):
    return run(check_video(app, key, clip(pattern), "video/mp4"))


def test_seven_live_frames_stop_after_the_first_chunk(make_app):
    app = make_app()
    r = verdict_of(app, "L" * 30)
    assert r.verdict is Verdict.LIVE and r.alive and r.stopped_early and not r.errors
    assert [f.frame_no for f in r.frames] == list(range(7))  # judged: up to the rule, in time order
    assert all(f.live for f in r.frames) and r.average_liveness == pytest.approx(0.9, abs=1e-6)
    assert r.frames_selected == 30 and r.frames_analyzed == 8  # the 8th was computed, not judged
    assert r.frames_decoded <= 17 < 30  # the decoder stopped: two chunks' slots and the frame in hand
    assert r.best_face is not None and r.best_face.frame_no < 7


def test_seven_spoof_frames_decide_even_after_live_ones(make_app):
    r = verdict_of(make_app(), "LLL" + "S" * 27)
    assert r.verdict is Verdict.SPOOF and not r.alive and r.stopped_early
    assert len(r.frames) == 10 and r.frames_analyzed == 16
    (issue,) = r.errors
    assert issue.code == REJECTED and issue.details == {"live": 3, "spoof": 7, "failures": 0}


def test_five_frames_without_a_face_are_a_failure_to_acquire(make_app):
    r = verdict_of(make_app(), "LN" + "N" * 4 + "L" * 24)
    assert r.verdict is Verdict.FAILURE_TO_ACQUIRE and r.stopped_early and len(r.frames) == 6
    (issue,) = r.errors
    assert issue.code == FAILURE_TO_ACQUIRE
    assert issue.details["reasons"] == {"no_face": 5} and issue.details["failures"] == 5
    assert [f.reason for f in r.frames] == [None] + ["no_face"] * 5


def test_the_first_rule_to_fire_decides(make_app):
    """6 live (one short), 4 failures (one short), then the 7th spoof arrives first."""
    r = verdict_of(make_app(), "LLLLLL" + "NNNN" + "SSSSSSS" + "L" * 13)
    assert r.verdict is Verdict.SPOOF and len(r.frames) == 17 and r.frames_analyzed == 24
    assert r.errors[0].details == {"live": 6, "spoof": 7, "failures": 4}


def test_a_short_clip_is_decided_at_its_end(make_app):
    r = verdict_of(make_app(), "L" * 6)  # fewer usable frames than video_min_selected_frames (10)
    assert r.verdict is Verdict.FAILURE_TO_ACQUIRE and not r.stopped_early and r.frames_analyzed == 6
    assert "at least 10" in r.errors[0].message
    app = make_app(video_min_selected_frames=3)
    assert verdict_of(app, "LLLSS").verdict is Verdict.LIVE  # the majority of usable frames
    assert verdict_of(app, "LLSS").verdict is Verdict.SPOOF  # a tie is spoof
    assert verdict_of(app, "LNLNS").verdict is Verdict.LIVE  # failures do not count in the majority
    r = verdict_of(app, "LNNNS")  # 2 usable < 3, 3 failures < 5
    assert r.verdict is Verdict.FAILURE_TO_ACQUIRE and r.errors[0].details["reasons"] == {"no_face": 3}


def test_the_stop_counts_are_settings(make_app):
    app = make_app(video_live_frames_to_stop=3, video_spoof_frames_to_stop=2, video_max_failures=1,
                   video_chunk_frames=2)
    r = verdict_of(app, "LLL" + "S" * 10)
    assert r.verdict is Verdict.LIVE and len(r.frames) == 3 and r.frames_analyzed == 4
    assert verdict_of(app, "LSS" + "L" * 10).verdict is Verdict.SPOOF
    assert verdict_of(app, "LN" + "L" * 10).verdict is Verdict.FAILURE_TO_ACQUIRE


def test_one_unit_per_verdict_none_for_a_failure_to_acquire(make_app):
    app = make_app(auth_enabled=True)
    key = app.keys.create("video", 10).raw_key
    assert verdict_of(app, "L" * 30, key).charged
    assert verdict_of(app, "S" * 30, key).charged  # a spoof verdict is an answer too
    assert not verdict_of(app, "N" * 30, key).charged  # refunded
    assert app.keys.usage("video").used == 2
