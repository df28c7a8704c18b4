"""App-server sessions without HTTP: parameters, tokens (rotation, expiry, tampering), both
stores (SQLite file and mongomock), attempt accounting and per-device throttling.

The round trip over real HTTP with the real models is tests/e2e/test_sessions_api.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import numpy as np
import pytest

from liveness.admission import Admission, FixedRouting
from liveness.errors import LivenessError
from liveness.sessions import SessionParams, SessionRecord, SessionService, parse_params
from liveness.sessions.store import MongoSessionStore, SqliteSessionStore
from liveness.rollout.router import Router
from liveness.settings import Settings
from liveness.tokens import SessionTokens


# ----------------------------------------------------------------------------- parameters


def test_params_defaults_and_azure_names():
    p = parse_params({"mode": "passive"})
    assert (p.auth_token_ttl_seconds, p.send_results_to_client, p.max_attempts, p.enable_session_image) == (600, False, 3, False)
    p = parse_params({"livenessOperationMode": "Video-Verify", "deviceCorrelationId": "dev-1",
                      "authTokenTimeToLiveInSeconds": 120, "sendResultsToClient": True})
    assert (p.mode, p.family, p.verify, p.device_correlation_id, p.auth_token_ttl_seconds) == ("video-verify", "video", True, "dev-1", 120)


@pytest.mark.parametrize("doc,field", [
    ({}, "mode"),
    ({"mode": "selfie"}, "mode"),
    ({"mode": "passive", "auth_token_ttl_seconds": 59}, "auth_token_ttl_seconds"),
    ({"mode": "passive", "auth_token_ttl_seconds": 86401}, "auth_token_ttl_seconds"),
    ({"mode": "passive", "max_attempts": 0}, "max_attempts"),
    ({"mode": "passive", "send_results_to_client": "yes"}, "send_results_to_client"),
    ({"mode": "passive", "send_result_to_client": True}, "send_result_to_client"),  # typo: refused
    ({"mode": "passive", "device_correlation_id": ""}, "device_correlation_id"),
])
def test_params_refused_with_the_field_named(doc, field):
    with pytest.raises(LivenessError) as e:
        parse_params(doc)
    assert e.value.code == "invalid_request" and e.value.details["field"] == field


def test_form_fields_are_text():
    p = parse_params({"mode": "passive", "max_attempts": "2", "send_results_to_client": "true"})
    assert p.max_attempts == 2 and p.send_results_to_client is True


# ----------------------------------------------------------------------------- tokens


def test_token_round_trip_rotation_and_tampering():
    old, new = b"old-secret-" * 4, b"new-secret-" * 4
    now = time.time()
    issued_old = SessionTokens([old]).issue("sid-1", "passive", now, 600)
    rotated = SessionTokens([new, old])
    assert rotated.verify(issued_old).session_id == "sid-1"  # old tokens verify until they expire
    fresh = rotated.issue("sid-2", "video", now, 600)
    assert SessionTokens([new]).verify(fresh).mode == "video"  # the first secret signs
    with pytest.raises(LivenessError) as e:
        SessionTokens([old]).verify(fresh)
    assert e.value.code == "invalid_session_token"
    head, payload, sig = fresh.split(".")
    forged = jwt.encode({**jwt.decode(fresh, options={"verify_signature": False}), "sid": "other"}, b"x" * 40,
                        algorithm="HS256")
    for bad in (f"{head}.{payload}.{sig[:-2]}AA", forged, "eyJ.not.jwt"):
        with pytest.raises(LivenessError) as e:
            rotated.verify(bad)
        assert e.value.code == "invalid_session_token"


def test_expired_token():
    tokens = SessionTokens([b"s" * 40])
    stale = tokens.issue("sid", "passive", time.time() - 700, 600)
    with pytest.raises(LivenessError) as e:
        tokens.verify(stale)
    assert e.value.code == "session_token_expired" and e.value.status == 401


def test_token_of_another_type_is_refused():
    secret = b"s" * 40
    grpc_like = jwt.encode({"sub": "key", "sid": "x", "mode": "passive", "iat": 1, "exp": int(time.time()) + 60,
                            "typ": "challenge_result"}, secret, algorithm="HS256")
    with pytest.raises(LivenessError):
        SessionTokens([secret]).verify(grpc_like)


# ----------------------------------------------------------------------------- stores


@pytest.fixture
def store(store_of):
    return store_of(SqliteSessionStore, MongoSessionStore)


def _rec(sid: str, key: str = "k1", created: float = 1000.0, ttl: int = 600, reference: bytes | None = None) -> SessionRecord:
    return SessionRecord(sid, key, SessionParams(mode="passive-verify" if reference else "passive",
                                                 auth_token_ttl_seconds=ttl), created, created + ttl,
                         reference=reference, verify_image={"quality_for_recognition": "high"} if reference else None)


def test_store_crud_cas_and_listing(store):
    emb = np.arange(128, dtype=np.float32).tobytes()
    store.create(_rec("a", reference=emb))
    store.create(_rec("b", created=1001.0))
    store.create(_rec("c", key="k2"))
    got = store.get("a")
    assert got.reference == emb and got.params.verify and got.verify_image["quality_for_recognition"] == "high"
    assert [r.session_id for r in store.list("k1", 10)] == ["b", "a"]
    assert store.update(got.with_state({"attempts": [{"attempt_id": 1}]}))
    assert not store.update(got.with_state({"attempts": []}))  # stale version loses
    assert store.get("a").attempts == [{"attempt_id": 1}]
    assert store.delete("a") and store.get("a") is None and not store.delete("a")


def test_purge_wipes_embeddings_at_expiry_and_deletes_after_retention(store):
    emb = np.ones(128, np.float32).tobytes()
    store.create(_rec("live", created=1000.0, ttl=600, reference=emb))
    store.create(_rec("expired", created=0.0, ttl=600, reference=emb))
    store.create(_rec("old", created=-90000.0, ttl=600))
    store.put_image("expired", 1, b"jpeg", "image/jpeg", 100.0, 1200.0)
    store.put_image("live", 1, b"jpeg", "image/jpeg", 1000.0, 1100.0)
    counts = store.purge(now=1200.0, retention_s=3600.0, failure_window_s=480.0)
    assert store.get("live").reference == emb  # still running
    assert store.get("expired").reference is None  # expired: the embedding goes at once
    assert store.get("old") is None  # expired more than retention ago: the whole session goes
    assert store.get_image("live", 1, 1200.0) is None and store.get_image("expired", 1, 1000.0) is None
    assert counts.references_wiped == 1 and counts.sessions_deleted == 1 and counts.images_deleted == 2


def test_delete_removes_images(store):
    store.create(_rec("s"))
    store.put_image("s", 1, b"img", "image/png", 1000.0, 9e9)
    assert store.get_image("s", 1, 1000.0) == (b"img", "image/png")
    store.delete("s")
    assert store.get_image("s", 1, 1000.0) is None


def test_token_secret_is_stable(store):
    assert store.token_secret() == store.token_secret() and len(store.token_secret()) >= 32


# ----------------------------------------------------------------------------- attempts and throttling


class _NoAuthApp:
    """The one seam: the use cases, of which these tests need only the admission context (the
    real one, authentication disabled: every caller admitted, nothing charged)."""

    def __init__(self) -> None:
        self.admission = Admission(None, FixedRouting(Router({})))


class Clock:
    def __init__(self, t: float = 10_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _service(tmp_path: Path, clock: Clock, **overrides) -> SessionService:
    settings = Settings(db_path=tmp_path / "db.sqlite3", session_token_secrets=("t" * 40,), **overrides)
    return SessionService(_NoAuthApp(), settings, clock=clock)


def run(coro):
    return asyncio.run(coro)


def test_attempts_are_reserved_and_spent(tmp_path):
    clock = Clock()
    svc = _service(tmp_path, clock)
    created = run(svc.create(None, parse_params({"mode": "passive", "max_attempts": 2}), None))
    token = created["auth_token"]
    with pytest.raises(LivenessError) as e:
        run(svc.begin(token, "video"))
    assert e.value.code == "token_mode_mismatch"
    g1 = run(svc.begin(token, "passive"))
    g2 = run(svc.begin(token, "passive"))
    assert (g1.attempt_id, g2.attempt_id) == (1, 2)
    with pytest.raises(LivenessError) as e:
        run(svc.begin(token, "passive"))
    assert e.value.code == "attempts_exhausted"
    run(svc.release(g2))  # our failure gives the attempt back
    g3 = run(svc.begin(token, "passive"))
    assert g3.attempt_id == 2
    view = run(svc.get(None, created["session_id"]))
    assert view["status"] == "Started" and view["attempts_used"] == 2


def test_concurrent_attempts_never_exceed_max(tmp_path):
    clock = Clock()
    svc = _service(tmp_path, clock)
    token = run(svc.create(None, parse_params({"mode": "passive", "max_attempts": 3}), None))["auth_token"]

    async def race():
        return await asyncio.gather(*(svc.begin(token, "passive") for _ in range(10)), return_exceptions=True)

    results = run(race())
    grants = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, LivenessError)]
    assert len(grants) == 3 and sorted(g.attempt_id for g in grants) == [1, 2, 3]
    assert {e.code for e in errors} <= {"attempts_exhausted", "internal_error"}


def test_session_expiry_stops_the_token(tmp_path):
    clock = Clock()
    svc = _service(tmp_path, clock)
    created = run(svc.create(None, parse_params({"mode": "passive", "auth_token_ttl_seconds": 60}), None))
    clock.t += 61
    with pytest.raises(LivenessError) as e:
        run(svc.begin(created["auth_token"], "passive"))
    assert e.value.code == "session_token_expired"
    assert run(svc.get(None, created["session_id"]))["status"] == "Expired"


def test_abandoned_attempt_reads_as_failed_and_stays_spent(tmp_path):
    clock = Clock()
    svc = _service(tmp_path, clock, challenge_session_ttl_s=120, video_decode_timeout_s=20)
    created = run(svc.create(None, parse_params({"mode": "challenge", "max_attempts": 2}), None))
    sid, token = created["session_id"], created["auth_token"]
    run(svc.begin(token, "challenge"))  # the client starts a challenge and goes away
    clock.t += 100
    assert run(svc.get(None, sid))["attempts"][0]["status"] == "running"  # may still finish
    clock.t += 41  # past the challenge session's lifetime: it cannot
    view = run(svc.get(None, sid))
    assert view["attempts"][0]["status"] == "failed"
    assert view["attempts"][0]["error"]["code"] == "attempt_abandoned"
    assert view["attempts_used"] == 1 and view["status"] == "Started"
    assert run(svc.begin(token, "challenge")).attempt_id == 2  # the abandoned try is not given back
    with pytest.raises(LivenessError) as e:
        run(svc.begin(token, "challenge"))
    assert e.value.code == "attempts_exhausted"
    clock.t += 600  # the session expired: nothing still running can finish
    view = run(svc.get(None, sid))
    assert view["status"] == "Expired"
    assert [a["error"]["code"] for a in view["attempts"]] == ["attempt_abandoned"] * 2


def test_device_throttling_after_failures(tmp_path):
    from liveness.sessions.service import AttemptResult

    clock = Clock()
    svc = _service(tmp_path, clock, session_throttle_failures=3, session_throttle_window_s=180,
                   session_throttle_cooldown_s=300)
    params = parse_params({"mode": "passive", "device_correlation_id": "phone-7", "max_attempts": 10})
    token = run(svc.create(None, params, None))["auth_token"]
    spoof = AttemptResult("spoofface", 0.1, 0.5, None, [], "sha256:x")
    for _ in range(3):
        clock.t += 10
        run(svc.finish(run(svc.begin(token, "passive")), result=spoof))
    clock.t += 10
    with pytest.raises(LivenessError) as e:
        run(svc.begin(token, "passive"))
    assert e.value.code == "too_many_failed_attempts" and 0 < e.value.details["retry_after"] <= 300
    with pytest.raises(LivenessError):  # the device cannot open a new session either
        run(svc.create(None, params, None))
    other = parse_params({"mode": "passive", "device_correlation_id": "phone-8"})
    run(svc.create(None, other, None))  # another device is not affected
    clock.t += 300
    run(svc.begin(token, "passive"))  # the cool-down is over


def test_realface_ends_the_session_and_client_view_hides_results(tmp_path):
    from liveness.sessions.service import AttemptResult

    clock = Clock()
    svc = _service(tmp_path, clock)
    created = run(svc.create(None, parse_params({"mode": "passive"}), None))
    grant = run(svc.begin(created["auth_token"], "passive"))
    view = run(svc.finish(grant, result=AttemptResult("realface", 0.99, 0.5, None, [], "sha256:ab")))
    assert view == {"session_id": created["session_id"], "attempt_id": 1, "status": "completed", "attempts_remaining": 2}
    with pytest.raises(LivenessError) as e:
        run(svc.begin(created["auth_token"], "passive"))
    assert e.value.code == "session_completed"
    full = run(svc.get(None, created["session_id"]))
    assert full["status"] == "ResultAvailable" and full["result"]["decision"] == "realface"
    assert full["attempts"][0]["result"]["digest"] == "sha256:ab"
