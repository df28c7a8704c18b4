"""A challenge session on the real core (LivenessApp on a fake backend, tests/fakes.py) with a
fake clock: frame-rate metering judged on the injected clock, passive scores from the fake
classifiers through the real pipeline and fusion, one unit charged at start (it buys the verdict
and a bounded number of scored frames).  No model is loaded, nothing sleeps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from liveness.challenges.service import ChallengeService
from liveness.errors import FRAME_TOO_FAST, KEY_SESSION_LIMIT, QUOTA_EXCEEDED, SESSION_FINISHED, LivenessError
from liveness.settings import Settings
from tests.conftest import run
from tests.fakes import MODEL_REPOSITORY, Box, FakeBackend, FakeClock, fake_app, retinaface_responder


@pytest.fixture
def core(tmp_path, monkeypatch):
    settings = Settings(model_repository=MODEL_REPOSITORY, db_path=tmp_path / "db.sqlite3", verification_enabled=False,
                        jwt_secret="x" * 32, challenge_max_fps=10.0, challenge_max_frames=6,
                        challenge_max_sessions_per_key=2, challenge_sessions_per_key_per_minute=3)
    backend = FakeBackend(retinaface=retinaface_responder([Box(0.3, 0.25, 0.4, 0.5)]),
                          minifasnet_v2=0.8, minifasnet_v1se=0.6)
    app = fake_app(settings, backend, monkeypatch)
    clock = FakeClock()
    service = ChallengeService(app, settings, measure=False, clock=clock)  # no landmarks: steps never complete
    yield app, service, clock
    service.close()
    app.close()


def frame() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def test_frames_are_metered_on_the_clock_and_the_session_is_charged_once_at_start(core):
    app, service, clock = core
    key = app.keys.create("chal", 5).raw_key
    jpeg = frame()

    async def scenario():
        sid = (await service.start(key, ["blink"], admin=True))["session_id"]
        first = await service.process(key, sid, jpeg)
        assert first["face_detected"] and first["frame_score"] == pytest.approx(0.7, abs=1e-6)  # mean fusion
        clock.advance(0.04)  # a 1.5-frame bucket at 10 fps: 0.5 left, 0.05 s to earn the next frame
        with pytest.raises(LivenessError) as exc:
            await service.process(key, sid, jpeg)
        assert exc.value.kind is FRAME_TOO_FAST and 0 < exc.value.details["retry_after_ms"] <= 11
        clock.advance(0.02)
        await service.process(key, sid, jpeg)
        for _ in range(3):  # a steady 10 fps is always within the cap
            clock.advance(0.1)
            await service.process(key, sid, jpeg)
        status = await service.status(key, sid)
        assert status["frames"] == 5 and status["passive_score"] == pytest.approx(0.7, abs=1e-6)
        assert app.keys.usage("chal").used == 1  # the start paid for the session; frames are not charged
        done = await service.complete(key, sid)
        assert done["verdict"] == "failed" and done["reasons"] == ["steps_incomplete"]
        assert await service.complete(key, sid) == done  # the same stored verdict, never charged
        return done

    done = run(scenario())
    assert app.keys.usage("chal").used == 1
    assert {"retinaface", "minifasnet_v2", "minifasnet_v1se"} <= set(done["model_versions"])


def test_a_key_never_gets_more_frame_scores_than_it_paid_for(core):
    """The issue's case: a key with a limit of 1 scored 80 frames on 10 sessions for free."""
    app, service, clock = core
    key = app.keys.create("one", 1).raw_key

    async def scenario():
        sid = (await service.start(key))["session_id"]
        scores = []
        for _ in range(6):
            clock.advance(0.2)
            scores.append((await service.process(key, sid, frame()))["frame_score"])
        clock.advance(0.2)
        with pytest.raises(LivenessError) as exc:  # the unit bought 6 scored frames (challenge_max_frames)
            await service.process(key, sid, frame())
        assert exc.value.kind is SESSION_FINISHED and exc.value.details["reason"] == "frame_limit"
        with pytest.raises(LivenessError) as exc:  # a second session needs a second unit
            await service.start(key)
        assert exc.value.kind is QUOTA_EXCEEDED
        done = await service.complete(key, sid)  # the paid verdict is still there
        return scores, done

    scores, done = run(scenario())
    assert len(scores) == 6 and done["verdict"] == "failed"
    u = app.keys.usage("one")
    assert (u.used, u.succeeded, u.refunded) == (1, 1, 0)


def test_per_key_session_limits_refuse_without_charging(core):
    """2 live sessions and 3 starts a minute per key (the fixture's settings); refusals are free."""
    app, service, clock = core
    key, other = app.keys.create("busy", 100).raw_key, app.keys.create("other", 100).raw_key

    async def scenario():
        first = (await service.start(key))["session_id"]
        await service.start(key)
        with pytest.raises(LivenessError) as exc:
            await service.start(key)  # a third live one
        assert exc.value.kind is KEY_SESSION_LIMIT and exc.value.status == 429 and exc.value.details["limit"] == 2
        await service.start(other)  # the pool is not full for anyone else
        await service.complete(key, first)  # one is done: no longer live
        clock.advance(1)
        third = (await service.start(key))["session_id"]
        await service.complete(key, third)
        clock.advance(1)
        with pytest.raises(LivenessError) as exc:
            await service.start(key)  # one live, but three started within the minute
        assert exc.value.kind is KEY_SESSION_LIMIT and exc.value.details["window_s"] == 60.0
        clock.advance(60)
        await service.start(key)

    run(scenario())
    u = app.keys.usage("busy")
    assert (u.used, u.succeeded, u.refunded) == (4, 4, 2)
    assert service.stats(app.keys.get("busy").key_id)["active_sessions"] == 2
    assert service.stats()["active_sessions"] == 3
