"""Active challenges: the pure state machine on FaceSignals sequences, the session stores, and
ChallengeService on a fake app (no models) with an injected clock."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, replace
from types import SimpleNamespace

import jwt
import numpy as np
import pytest

from liveness.admission import Admission, FixedRouting
from liveness.challenges import steps as S
from liveness.challenges.identity import changed, colour_hist, continuity
from liveness.challenges.service import ChallengeService, verify_result_token
from liveness.challenges.store import MongoSessionStore, SessionLimits, SessionRow, SqliteSessionStore
from liveness.detection.base import Face
from liveness.errors import (
    FRAME_TOO_FAST,
    INVALID_REQUEST,
    KEY_SESSION_LIMIT,
    NO_FACE,
    SESSION_EXPIRED,
    SESSION_FINISHED,
    SESSION_NOT_FOUND,
    TOO_MANY_SESSIONS,
    LivenessError,
)
from liveness.imaging import ImageLimits
from liveness.landmarks.signals import FaceSignals
from liveness.operations import Operations
from liveness.rollout.router import Resolved, Router
from liveness.settings import Settings

TH = S.Thresholds()
LIM = S.Limits()
BOX = (100.0, 100.0, 200.0, 200.0)
HIST = colour_hist(np.full((80, 80, 3), 120, np.uint8))


def sig(l: float = 0.4, r: float | None = None, yaw: float = 0.0, pitch: float = 0.0, mouth: float = 0.05,
        smile: float = 1.0, brows: float = 0.5, presence: float = 1.0) -> FaceSignals:
    return FaceSignals(l, l if r is None else r, yaw, pitch, 0.0, mouth, smile, brows, presence)


def run(steps: list[str], signals: list[FaceSignals | None], dt: float = 0.1, passive: float = 0.9,
        limits: S.Limits = LIM) -> tuple[dict, list[S.Event]]:
    state = S.new_state(steps, 0.0)
    events = []
    for i, s in enumerate(signals):
        obs = S.Observation(BOX, passive, HIST, s)
        events.append(S.advance(state, obs, (i + 1) * dt, limits, TH))
    return state, events


# -- state machine ---------------------------------------------------------------------------


def test_blink_open_closed_open_completes():
    state, events = run(["blink"], [sig(0.4), sig(0.4), sig(0.2), sig(0.4)])
    assert state["status"] == S.STEPS_DONE
    assert [e.step_completed for e in events] == [False, False, False, True]
    assert events[-1].completed_step == "blink"


def test_still_open_eyes_never_blink():
    state, _ = run(["blink"], [sig(0.4)] * 100)
    assert state["status"] == S.ACTIVE and state["index"] == 0


def test_blink_needs_open_before_closed_and_short_closure():
    state, _ = run(["blink"], [sig(0.2), sig(0.4)])  # closed first: only "open" seen so far
    assert state["index"] == 0
    # eyes shut 1.5 s (> blink_max_closed_s): not a blink
    state, _ = run(["blink"], [sig(0.4)] + [sig(0.2)] * 15 + [sig(0.4)])
    assert state["index"] == 0


def test_one_eye_closed_is_wink_not_blink():
    state, _ = run(["blink"], [sig(0.4), sig(0.2, 0.4), sig(0.4)])
    assert state["index"] == 0
    state, _ = run(["wink"], [sig(0.4), sig(0.2, 0.4), sig(0.4)])
    assert state["status"] == S.STEPS_DONE
    state, _ = run(["wink"], [sig(0.4), sig(0.2, 0.2), sig(0.4)])  # a blink is no wink
    assert state["index"] == 0


def test_turns_need_centre_first_and_direction():
    state, _ = run(["turn_left"], [sig(yaw=0), sig(yaw=12), sig(yaw=25)])
    assert state["status"] == S.STEPS_DONE
    state, _ = run(["turn_left"], [sig(yaw=0), sig(yaw=-30)])  # wrong way
    assert state["index"] == 0
    state, _ = run(["turn_right"], [sig(yaw=30)] * 5 + [sig(yaw=-30)] * 5)  # never seen near the centre
    assert state["index"] == 0
    state, _ = run(["turn_right"], [sig(yaw=-30)] * 10)  # a photo already turned
    assert state["index"] == 0


def test_expressions_relative_to_session_minimum():
    state, _ = run(["smile"], [sig(smile=1.0), sig(smile=1.05), sig(smile=1.2)])
    assert state["status"] == S.STEPS_DONE
    state, _ = run(["smile"], [sig(smile=1.2)] * 10)
    assert state["index"] == 0
    state, _ = run(["raise_brows"], [sig(brows=0.5), sig(brows=0.6)])
    assert state["status"] == S.STEPS_DONE
    state, _ = run(["open_mouth"], [sig(mouth=0.05), sig(mouth=0.5)])
    assert state["status"] == S.STEPS_DONE
    state, _ = run(["open_mouth"], [sig(mouth=0.5)] * 5)
    assert state["index"] == 0
    state, _ = run(["look_center"], [sig(yaw=30), sig(yaw=2), sig(yaw=1)])
    assert state["status"] == S.STEPS_DONE


def test_sequence_advances_one_step_at_a_time():
    seq = [sig(0.4), sig(0.2), sig(0.4), sig(yaw=0), sig(yaw=25), sig(yaw=0), sig(yaw=-25)]
    state, events = run(["blink", "turn_left", "turn_right"], seq)
    assert state["status"] == S.STEPS_DONE
    assert [c["step"] for c in state["completed"]] == ["blink", "turn_left", "turn_right"]
    assert sum(e.step_completed for e in events) == 3


def test_low_presence_signals_are_ignored():
    state, _ = run(["blink"], [sig(0.4, presence=0.1), sig(0.2, presence=0.1), sig(0.4, presence=0.1)])
    assert state["index"] == 0


def test_step_timeout_fails():
    limits = replace(LIM, step_timeout_s=1.0)
    state, events = run(["blink"], [sig(0.4)] * 20, limits=limits)
    assert state["status"] == S.FAILED and state["reason"] == S.STEP_TIMEOUT
    assert any(e.failed == S.STEP_TIMEOUT for e in events)


def test_face_missing_too_long_fails_short_gap_ok():
    state = S.new_state(["blink"], 0.0)
    S.advance(state, S.Observation(BOX, 0.9, HIST, sig()), 0.1, LIM, TH)
    for t in (0.5, 1.0, 2.0):
        S.advance(state, S.Observation(None), t, LIM, TH)
    assert state["status"] == S.ACTIVE  # 1.9 s without face
    S.advance(state, S.Observation(BOX, 0.9, HIST, sig()), 2.05, LIM, TH)
    S.advance(state, S.Observation(None), 4.0, LIM, TH)
    assert state["status"] == S.ACTIVE
    S.advance(state, S.Observation(None), 4.2, LIM, TH)  # 2.15 s since the last face
    assert state["status"] == S.FAILED and state["reason"] == S.FACE_LOST


def test_identity_jump_fails():
    state = S.new_state(["blink"], 0.0)
    S.advance(state, S.Observation(BOX, 0.9, HIST, sig()), 0.1, LIM, TH)
    S.advance(state, S.Observation((400.0, 100.0, 200.0, 200.0), 0.9, HIST, sig()), 0.2, LIM, TH)
    assert state["reason"] == S.IDENTITY_CHANGED
    state = S.new_state(["blink"], 0.0)
    other = colour_hist(np.full((80, 80, 3), 30, np.uint8))
    S.advance(state, S.Observation(BOX, 0.9, HIST, sig()), 0.1, LIM, TH)
    S.advance(state, S.Observation(BOX, 0.9, other, sig()), 0.2, LIM, TH)
    assert state["reason"] == S.IDENTITY_CHANGED


def test_identity_rule_on_calibration_values():
    # silentface_demo.gif segment cuts, and the worst same-person frames of the real video
    assert changed({"center_jump": 0.2167, "area_ratio": 0.7459, "appearance": 0.6969}, 0.5, 0.5, 0.6)
    assert changed({"center_jump": 0.2606, "area_ratio": 0.197, "appearance": 0.7071}, 0.5, 0.5, 0.6)
    assert not changed({"center_jump": 0.0062, "area_ratio": 0.9741, "appearance": 0.7832}, 0.5, 0.5, 0.6)
    assert not changed({"center_jump": 0.1722, "area_ratio": 0.9694, "appearance": 0.9385}, 0.5, 0.5, 0.6)
    c = continuity(BOX, BOX, HIST, HIST)
    assert c == {"center_jump": 0.0, "area_ratio": 1.0, "appearance": 1.0}


def test_state_is_json_roundtrippable():
    import json

    state, _ = run(["blink", "smile"], [sig(0.4), sig(0.2)])
    again = json.loads(json.dumps(state))
    S.advance(again, S.Observation(BOX, 0.9, HIST, sig(0.4)), 0.3, LIM, TH)
    assert again["index"] == 1  # the blink detector state survived serialisation


def test_unknown_challenge_rejected():
    with pytest.raises(ValueError):
        S.new_state(["levitate"], 0.0)


# -- stores ----------------------------------------------------------------------------------


def _row(sid: str = "s1", key: str = "k1", expires: float = 100.0) -> SessionRow:
    return SessionRow(sid, key, 0.0, expires, S.ACTIVE, 0, S.new_state(["blink"], 0.0))


@pytest.fixture
def store(store_of):
    return store_of(SqliteSessionStore, MongoSessionStore)


def test_one_key_cannot_fill_the_pool(store):
    limits = SessionLimits(total=10, per_key=2, per_key_in_window=3, window_s=60.0)
    store.create(_row("a1", key="a"), limits, now=0.0)
    store.create(_row("a2", key="a"), limits, now=0.0)
    with pytest.raises(LivenessError) as e:
        store.create(_row("a3", key="a"), limits, now=0.0)  # two live already
    assert e.value.kind is KEY_SESSION_LIMIT and e.value.status == 429 and e.value.details["limit"] == 2
    store.create(_row("b1", key="b"), limits, now=0.0)  # another key is unaffected
    done = store.get("a1")
    assert store.update(done.with_state(dict(done.state, status=S.COMPLETED)))
    store.create(_row("a3", key="a"), limits, now=1.0)  # one finished: a third may start ...
    store.update(store.get("a3").with_state(dict(store.get("a3").state, status=S.COMPLETED)))
    with pytest.raises(LivenessError) as e:
        store.create(_row("a4", key="a"), limits, now=2.0)  # ... but not a fourth within the minute
    assert e.value.kind is KEY_SESSION_LIMIT and e.value.details["window_s"] == 60.0
    store.create(_row("a4", key="a", expires=200.0), limits, now=61.0)  # the window moved on
    assert store.counts(61.0, "a")["active"] == 2 and store.counts(61.0, "b")["active"] == 1
    assert store.counts(61.0)["active"] == 3


def test_store_cas_cap_purge_counts(store):
    store.create(_row("a"), 2, now=0.0)
    store.create(_row("b"), 2, now=0.0)
    with pytest.raises(LivenessError) as e:
        store.create(_row("c"), 2, now=0.0)
    assert e.value.kind is TOO_MANY_SESSIONS
    row = store.get("a")
    assert row.state["steps"] == ["blink"]
    st = dict(row.state, index=1, status=S.STEPS_DONE)
    assert store.update(row.with_state(st))
    assert not store.update(row.with_state(st))  # stale version
    assert store.get("a").version == 1 and store.get("a").status == S.STEPS_DONE
    assert store.counts(0.0)["active"] == 2
    assert store.counts(200.0) == {"active": 0, "passed": 0, "failed": 0, "expired": 2}
    assert store.purge(150.0) == 2
    assert store.get("a") is None
    assert store.token_secret() == store.token_secret()


# -- the service on a fake app ---------------------------------------------------------------


def jpeg(shade: int = 128) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 320), (shade, shade, shade)).save(buf, format="JPEG")
    return buf.getvalue()


@dataclass
class Script:
    """What the fake pipeline 'sees' on the next frames."""

    signals: list
    passive: float = 0.9
    face: bool = True


class FakeKeys:
    """Two keys with quota to spare; ``charged``: the credentials whose unit was committed."""

    def __init__(self) -> None:
        self.charged: list[str] = []

    def check_credential(self, credential):
        if credential not in ("key-a", "key-b"):
            raise LivenessError(INVALID_REQUEST, "bad key")
        return SimpleNamespace(key_id="id-" + credential)

    authenticate_credential = check_credential  # quota to spare: the two agree

    def reserve_credential(self, credential):
        return credential

    def commit(self, reservation) -> None:
        self.charged.append(reservation)

    def refund(self, reservation) -> None:
        pass


class FakeApp(Operations):
    """The real use cases and admission context on a scripted pipeline (no models)."""

    def __init__(self, script: Script, settings: Settings) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.script = script
        self.fake_keys = FakeKeys()
        super().__init__(
            settings, backend=None, executor=ThreadPoolExecutor(1),
            pipeline=SimpleNamespace(limits=ImageLimits(), prepare_bgr=self._prepare, classify_probs=self._classify),
            admission=Admission(self.fake_keys, FixedRouting(Router({"m": Resolved(1)}))),
        )

    @property
    def charged(self) -> list[str]:
        return self.fake_keys.charged

    async def _prepare(self, bgr, versions):
        if not self.script.face:
            raise LivenessError(NO_FACE, "no face")
        return SimpleNamespace(face=Face(*BOX, 0.99), faces_found=1,
                               crops=(np.full((1, 3, 80, 80), 120.0, np.float32),))

    async def _classify(self, prepared, versions):
        p = self.script.passive
        return {"minifasnet_v2": p, "minifasnet_v1se": p}  # p(live) per model

    async def measure(self, app, bgr, face, versions):
        return self.script.signals.pop(0) if self.script.signals else sig()


class Clock:
    def __init__(self) -> None:
        self.t = __import__("time").time() - 60  # tokens use this clock too: keep iat in the past

    def __call__(self) -> float:
        return self.t


def make(tmp_path, script: Script, clock: Clock, **overrides) -> tuple[ChallengeService, FakeApp]:
    settings = Settings(db_path=tmp_path / "db.sqlite3", jwt_secret="x" * 32, **overrides)
    app = FakeApp(script, settings)
    return ChallengeService(app, settings, measure=app.measure, clock=clock), app


@pytest.fixture
def service(tmp_path):
    """``service(script=Script([]), **settings)`` -> (ChallengeService, its FakeApp, its Clock):
    a service on a SQLite store in tmp_path, its clock starting a minute in the past."""

    def made(script: Script | None = None, **overrides) -> tuple[ChallengeService, FakeApp, Clock]:
        clock = Clock()
        return (*make(tmp_path, script or Script([]), clock, **overrides), clock)

    return made


def test_service_full_session_token_and_charge(service):
    svc, app, clock = service(Script([sig(0.4), sig(0.2), sig(0.4), sig(yaw=0), sig(yaw=25)]))

    async def go():
        with pytest.raises(LivenessError) as e:
            await svc.start("key-a", ["blink"], admin=False)
        assert e.value.kind is INVALID_REQUEST
        s = await svc.start("key-a", ["blink", "turn_left"], admin=True)
        assert s["total_steps"] == 2 and s["current_step"] == 1 and s["expires_in_minutes"] == 10
        assert s["instruction"] == S.INSTRUCTIONS["blink"]
        sid = s["session_id"]
        answers = []
        for _ in range(5):
            clock.t += 0.1
            answers.append(await svc.process("key-a", sid, jpeg()))
        assert [a["step_completed"] for a in answers] == [False, False, True, False, True]
        assert answers[-1]["verification_complete"] and not answers[-1]["verification_failed"]
        assert answers[-1]["passive_score"] == pytest.approx(0.9)
        assert (await svc.status("key-a", sid))["status"] == S.STEPS_DONE
        done = await svc.complete("key-a", sid)
        assert done["verdict"] == "passed" and done["steps_completed"] == 2 and "best_frame" not in done
        claims = verify_result_token(b"x" * 32, done["result_token"])
        assert claims["sid"] == sid and claims["verdict"] == "passed" and claims["steps"] == ["blink", "turn_left"]
        assert claims["model_versions"] == {"m": 1}
        assert await svc.complete("key-a", sid) == done  # idempotent; the start was the one charge
        assert app.charged == ["key-a"]
        with pytest.raises(LivenessError) as e:
            clock.t += 1
            await svc.process("key-a", sid, jpeg())
        assert e.value.kind is SESSION_FINISHED
        assert svc.stats()["completed_sessions"] == 1
        # not usable as a gRPC bearer token (no jti/sub)
        from liveness.keys.tokens import verify_token

        with pytest.raises(LivenessError):
            verify_token(b"x" * 32, done["result_token"])
        with pytest.raises(jwt.InvalidTokenError):
            verify_result_token(b"y" * 32, done["result_token"])

    asyncio.run(go())


def test_frame_rate_is_metered_on_average_not_per_gap(service):
    """challenge_max_fps 15: 10 fps with jitter passes, two frames at once or 25 fps do not."""
    svc, app, clock = service(challenge_session_ttl_s=60.0)

    async def go():
        sid = (await svc.start("key-a"))["session_id"]
        for gap in (0.1, 0.16, 0.04, 0.1, 0.14, 0.06, 0.1):  # a late frame, then an early one
            clock.t += gap
            await svc.process("key-a", sid, jpeg())
        with pytest.raises(LivenessError) as e:
            await svc.process("key-a", sid, jpeg())  # at the same instant
        assert e.value.kind is FRAME_TOO_FAST and e.value.details["retry_after_ms"] >= 1
        refused = 0
        for _ in range(10):  # a steady 25 fps
            clock.t += 0.04
            try:
                await svc.process("key-a", sid, jpeg())
            except LivenessError as err:
                assert err.kind is FRAME_TOO_FAST
                refused += 1
        assert refused >= 3
        assert (await svc.status("key-a", sid))["frames"] == 7 + 10 - refused

    asyncio.run(go())


def test_service_errors_fps_foreign_expired_restart(service):
    svc, app, clock = service(challenge_session_ttl_s=5.0)

    async def go():
        sid = (await svc.start("key-a"))["session_id"]
        state = (await svc.status("key-a", sid))
        assert state["total_steps"] == 3
        clock.t += 0.1
        await svc.process("key-a", sid, jpeg())
        clock.t += 0.02  # 50 fps
        with pytest.raises(LivenessError) as e:
            await svc.process("key-a", sid, jpeg())
        assert e.value.kind is FRAME_TOO_FAST
        assert (await svc.status("key-a", sid))["frames"] == 1  # unchanged
        for kind_key, who in ((SESSION_NOT_FOUND, "key-b"),):
            with pytest.raises(LivenessError) as e:
                await svc.process(who, sid, jpeg())
            assert e.value.kind is kind_key
        with pytest.raises(LivenessError) as e:
            await svc.status("key-a", "nope")
        assert e.value.kind is SESSION_NOT_FOUND
        with pytest.raises(LivenessError) as e:
            clock.t += 0.2
            await svc.process("key-a", sid, b"not an image")
        assert e.value.status == 400 or e.value.status == 415
        # a restart: a new service on the same store continues the session
        svc2 = ChallengeService(app, svc.settings, measure=app.measure, clock=clock)
        clock.t += 0.2
        r = await svc2.process("key-a", sid, jpeg())
        assert r["face_detected"] and (await svc2.status("key-a", sid))["frames"] == 2
        clock.t += 10
        with pytest.raises(LivenessError) as e:
            await svc2.process("key-a", sid, jpeg())
        assert e.value.kind is SESSION_EXPIRED
        with pytest.raises(LivenessError) as e:
            await svc2.complete("key-a", sid)
        assert e.value.kind is SESSION_EXPIRED
        assert app.charged == ["key-a"]  # the start paid; an expired session is not charged again

    asyncio.run(go())


def test_service_passive_fail_and_return_frame(service):
    svc, app, clock = service(Script([sig(0.4), sig(0.2), sig(0.4)], passive=0.2), challenge_return_frame=True)

    async def go():
        sid = (await svc.start("key-a", ["blink"], admin=True))["session_id"]
        for _ in range(3):
            clock.t += 0.1
            r = await svc.process("key-a", sid, jpeg())
        assert r["verification_complete"]
        done = await svc.complete("key-a", sid)
        assert done["verdict"] == "failed" and done["reasons"] == [S.PASSIVE_SCORE_LOW]
        assert done["best_frame"]  # base64 JPEG
        assert svc.store.get(sid).best_frame is None  # dropped from the store at completion
        assert app.charged == ["key-a"]

    asyncio.run(go())


def test_service_no_face_then_lost(service):
    svc, app, clock = service(Script([], face=False))

    async def go():
        sid = (await svc.start("key-a", ["blink"], admin=True))["session_id"]
        out = []
        for _ in range(5):
            clock.t += 0.6
            out.append(await svc.process("key-a", sid, jpeg()))
        assert not out[0]["face_detected"] and out[0]["instruction"] == S.NO_FACE_INSTRUCTION
        assert out[-1]["verification_failed"] and out[-1]["reason"] == S.FACE_LOST
        done = await svc.complete("key-a", sid)
        assert done["verdict"] == "failed" and S.FACE_LOST in done["reasons"]

    asyncio.run(go())
