"""Liveness_service's documented fields on the challenge answers (liveness/challenges): every
field with its documented type, ``total_blinks`` counted over the whole session by the blink
rule, ``verified_image`` only when the operator keeps frames and the session passed, the status's
``created_at`` / ``completed``.  The pure state machine, and ChallengeService on the scripted fake
app of tests/test_challenge_sessions.py (no models, injected clock)."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime

import pytest

from liveness.challenges import steps as S
from tests.test_challenge_sessions import Clock, Script, jpeg, make, run, sig


def test_blinks_are_counted_over_the_whole_session_whatever_step_is_asked():
    # blink, then two more blinks during (and after) the turn step; a wink is not a blink
    frames = [sig(0.4), sig(0.2), sig(0.4), sig(0.4), sig(0.2), sig(0.4), sig(0.4, 0.2), sig(0.4),
              sig(0.2), sig(0.4), sig(yaw=0), sig(yaw=25), sig(0.2), sig(0.4)]
    state, events = run(["blink", "turn_left"], frames)
    assert state["status"] == S.STEPS_DONE
    assert state["blinks"] == 4  # the last one after every step was done still counts


def test_eyes_shut_too_long_are_not_a_blink():
    state, _ = run(["turn_left"], [sig(0.4)] + [sig(0.2)] * 30 + [sig(0.4)], dt=0.1)  # 3 s closed
    assert state["blinks"] == 0


def test_a_row_stored_before_the_counter_existed_still_counts():
    state = S.new_state(["blink"], 0.0)
    del state["blinks"], state["blink_counter"]
    for i, s in enumerate([sig(0.4), sig(0.2), sig(0.4)]):
        S.advance(state, S.Observation((100.0, 100.0, 200.0, 200.0), 0.9, None, s), 0.1 * (i + 1), S.Limits(), S.Thresholds())
    assert state["blinks"] == 1


def test_current_challenge():
    state = S.new_state(["blink", "smile"], 0.0)
    assert S.current_challenge(state) == "blink"
    state["index"] = 1
    assert S.current_challenge(state) == "smile"
    state["index"], state["status"] = 2, S.STEPS_DONE
    assert S.current_challenge(state) is None


def passing_session(tmp_path, **settings):
    clock = Clock()
    script = Script([sig(0.4), sig(0.2), sig(0.4), sig(0.2), sig(0.4)])
    svc, app = make(tmp_path, script, clock, **settings)

    async def go():
        started = await svc.start("key-a", ["blink"], admin=True)
        frames = []
        for _ in range(5):
            clock.t += 0.1
            frames.append(await svc.process("key-a", started["session_id"], jpeg()))
        status = await svc.status("key-a", started["session_id"])
        done = await svc.complete("key-a", started["session_id"])
        again = await svc.complete("key-a", started["session_id"])
        return started, frames, status, done, again

    return svc, app, clock, asyncio.run(go())


def test_the_documented_fields_and_types(tmp_path):
    svc, app, clock, (started, frames, status, done, again) = passing_session(tmp_path)
    assert started["success"] is True and started["challenge"] == "blink"
    assert started["expires_in_minutes"] == 10 and type(started["expires_in_minutes"]) is int
    assert all(f["success"] is True for f in frames)
    assert frames[0]["challenge"] == "blink" and frames[-1]["challenge"] is None  # the step was done at frame 3
    assert status["success"] is True and status["completed"] is True
    assert datetime.fromisoformat(status["created_at"]).timestamp() == pytest.approx(clock.t - 0.5, abs=1)
    assert (done["success"], done["verdict"], done["total_blinks"], done["steps_completed"]) == (True, "passed", 2, 1)
    assert type(done["total_blinks"]) is int and isinstance(done["verification_time"], float)
    assert datetime.fromisoformat(done["timestamp"]).timestamp() == pytest.approx(clock.t, abs=1)
    assert done["verified_image"] is None and done["verified_image_path"] is None and "best_frame" not in done
    assert again == done and app.charged == ["key-a"]
    assert svc.stats()["session_expiry_minutes"] == 10 and svc.active_sessions() == 0


def test_verified_image_only_when_frames_are_kept_and_the_session_passed(tmp_path):
    _, _, _, (_, _, _, done, again) = passing_session(tmp_path, challenge_return_frame=True)
    assert done["verified_image"] == done["best_frame"] and again["verified_image"] == done["verified_image"]
    assert base64.b64decode(done["verified_image"])[:3] == b"\xff\xd8\xff"  # a JPEG
    assert done["verified_image_path"] is None  # never a file


def test_a_failed_session_has_success_false_and_no_verified_image(tmp_path):
    clock = Clock()
    svc, _ = make(tmp_path, Script([sig(0.4)] * 5), clock, challenge_return_frame=True)

    async def go():
        sid = (await svc.start("key-a", ["blink"], admin=True))["session_id"]
        for _ in range(4):
            clock.t += 0.1
            await svc.process("key-a", sid, jpeg())
        assert (await svc.status("key-a", sid))["completed"] is False
        assert svc.active_sessions() == 1
        return await svc.complete("key-a", sid)

    done = asyncio.run(go())
    assert (done["success"], done["verdict"], done["verified_image"]) == (False, "failed", None)
    assert "best_frame" in done  # challenge_return_frame's own field is unchanged
