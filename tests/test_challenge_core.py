"""A challenge session on the real core (LivenessApp on a fake backend, tests/fakes.py) with a
fake clock: frame-rate metering judged on the injected clock, passive scores from the fake
classifiers through the real pipeline and fusion, one unit charged at completion.  No model is
loaded, nothing sleeps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from liveness.challenges.service import ChallengeService
from liveness.errors import FRAME_TOO_FAST, LivenessError
from liveness.settings import Settings
from tests.conftest import run
from tests.fakes import MODEL_REPOSITORY, Box, FakeBackend, FakeClock, fake_app, retinaface_responder


@pytest.fixture
def core(tmp_path, monkeypatch):
    settings = Settings(model_repository=MODEL_REPOSITORY, db_path=tmp_path / "db.sqlite3", verification_enabled=False,
                        jwt_secret="x" * 32, challenge_max_fps=10.0)
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


def test_frames_are_metered_on_the_clock_and_the_session_is_charged_once(core):
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
        assert app.keys.usage("chal").used == 0  # start and frames are never charged
        done = await service.complete(key, sid)
        assert done["verdict"] == "failed" and done["reasons"] == ["steps_incomplete"]
        assert await service.complete(key, sid) == done  # the same stored verdict, not charged again
        return done

    done = run(scenario())
    assert app.keys.usage("chal").used == 1
    assert {"retinaface", "minifasnet_v2", "minifasnet_v1se"} <= set(done["model_versions"])
