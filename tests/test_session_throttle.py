"""Per-device throttling of app-server sessions (liveness.sessions.throttle) on an injected clock:
both session stores (SQLite file and mongomock), bursts versus a slow trickle, the cool-down
counted from the burst's latest failure, and what counts as a failure in a session."""

from __future__ import annotations

import pytest

from liveness.admission import Admission, FixedRouting
from liveness.errors import NO_FACE, TOO_MANY_FAILED_ATTEMPTS, LivenessError
from liveness.rollout.router import Router
from liveness.sessions import SessionService, parse_params
from liveness.sessions.attempts import AttemptResult
from liveness.sessions.store import MongoSessionStore, SqliteSessionStore
from liveness.sessions.throttle import DeviceThrottle
from liveness.settings import Settings
from tests.conftest import run
from tests.fakes import FakeClock

LIMIT, WINDOW, COOLDOWN = 3, 180.0, 300.0


def _settings(tmp_path, **kw) -> Settings:
    return Settings(db_path=tmp_path / "db.sqlite3", session_token_secrets=("t" * 40,), session_throttle_failures=LIMIT,
                    session_throttle_window_s=WINDOW, session_throttle_cooldown_s=COOLDOWN, **kw)


@pytest.fixture
def throttle(store_of, tmp_path):
    clock = FakeClock()
    return DeviceThrottle(store_of(SqliteSessionStore, MongoSessionStore), _settings(tmp_path), clock), clock


def blocked(throttle: DeviceThrottle, key: str = "k1", device: str | None = "phone", now: float | None = None) -> int | None:
    """retry_after while blocked, else None."""
    try:
        run(throttle.check(key, device, now))
    except LivenessError as e:
        assert e.kind is TOO_MANY_FAILED_ATTEMPTS and e.status == 429
        assert "phone" not in e.message
        return e.details["retry_after"]
    return None


def fail(throttle: DeviceThrottle, key: str = "k1", device: str | None = "phone") -> None:
    run(throttle.record_failure(key, device))


def test_a_burst_blocks_the_device_until_the_cooldown_from_its_last_failure(throttle):
    t, clock = throttle
    start = clock.t
    for i in range(LIMIT):
        assert blocked(t) is None  # under the limit: allowed
        clock.advance(10)
        fail(t)
    last = clock.t  # start + 30
    assert blocked(t) == int(COOLDOWN) + 1
    clock.advance(COOLDOWN - 1)
    assert blocked(t) == 2  # int(last + cooldown - now) + 1
    clock.advance(1)
    assert clock.t == last + COOLDOWN and blocked(t) is None  # the cool-down is over
    assert t.keep_s == WINDOW + COOLDOWN and start < last


def test_other_devices_and_other_keys_are_not_affected(throttle):
    t, clock = throttle
    for _ in range(LIMIT):
        clock.advance(1)
        fail(t)
    assert blocked(t) is not None
    assert blocked(t, device="tablet") is None
    assert blocked(t, key="k2") is None  # the same device id under another API key


def test_a_slow_trickle_is_not_a_burst(throttle):
    """LIMIT failures in the recent past, but never LIMIT within one window."""
    t, clock = throttle
    for _ in range(LIMIT):
        clock.advance(WINDOW / 2 + 10)  # 100 s apart: two fit in a window, three do not
        fail(t)
    assert blocked(t) is None


def test_without_a_device_id_nothing_is_counted_or_blocked(throttle):
    t, clock = throttle
    for _ in range(LIMIT + 2):
        clock.advance(1)
        fail(t, device=None)
        fail(t, device="")
    assert blocked(t, device=None) is None and blocked(t, device="") is None
    assert t.store.failures_since("k1", "", 0.0) == (0, None)


def test_judged_on_the_given_time_or_the_clock(throttle):
    t, clock = throttle
    for _ in range(LIMIT):
        fail(t)  # all at clock.t
    assert blocked(t) is not None
    assert blocked(t, now=clock.t + COOLDOWN) is None  # an explicit now wins
    clock.advance(COOLDOWN)
    assert blocked(t) is None


# ----------------------------------------------------------------------------- in a session


class _NoAuthApp:
    def __init__(self) -> None:
        self.admission = Admission(None, FixedRouting(Router({})))


def test_spoof_and_input_errors_count_a_realface_does_not(tmp_path):
    clock = FakeClock()
    svc = SessionService(_NoAuthApp(), _settings(tmp_path), clock=clock)
    try:
        params = parse_params({"mode": "passive", "device_correlation_id": "phone", "max_attempts": 10})
        token = run(svc.create(None, params, None))["auth_token"]
        real = AttemptResult("realface", 0.9, 0.5, None, [], "sha256:x")
        spoof = AttemptResult("spoofface", 0.1, 0.5, None, [], "sha256:x")
        for outcome in ({"error": LivenessError(NO_FACE, "no face")}, {"result": spoof}):
            clock.advance(5)
            run(svc.finish(run(svc.begin(token, "passive")), **outcome))
        other = run(svc.create(None, params, None))["auth_token"]
        clock.advance(5)
        run(svc.finish(run(svc.begin(other, "passive")), result=real))  # ends that session, counts nothing
        clock.advance(5)
        run(svc.finish(run(svc.begin(token, "passive")), result=spoof))  # the third failure
        clock.advance(5)
        with pytest.raises(LivenessError) as e:
            run(svc.begin(token, "passive"))
        assert e.value.kind is TOO_MANY_FAILED_ATTEMPTS
        with pytest.raises(LivenessError) as e:
            run(svc.create(None, params, None))
        assert e.value.kind is TOO_MANY_FAILED_ATTEMPTS
        clock.advance(COOLDOWN)
        assert run(svc.begin(token, "passive")).attempt_id == 4
    finally:
        svc.close()
