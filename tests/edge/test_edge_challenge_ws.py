"""The challenge WebSocket (edge/challenge_ws.py), what tests/test_challenge_ws.py does not
cover: the close-code table, the start message's limits, cancel, protocol violations after
start, empty frames, admin options on a server without an admin key, our failures (1011) and a
model outage (1013) mid-session, the start and idle time limits, and a session token's run on
the real ChallengeService + SessionService (fake backend, fake clock): the result event carries
the session and the verdict only when the session sends results to the client."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from edge.challenge_ws import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    MAX_START_BYTES,
    PATH,
    challenge_ws_routes,
    close_code,
    parse_start,
)
from liveness import errors as E
from liveness.challenges.service import ChallengeService
from liveness.errors import LivenessError
from liveness.sessions import SessionService, parse_params
from tests.edge.helpers import jpeg, used

ADMIN = "ws-admin"
ADMIN_SHA = hashlib.sha256(ADMIN.encode()).hexdigest()


@pytest.mark.parametrize(("kind", "code"), [
    (E.IMAGE_TOO_LARGE, CLOSE_TOO_BIG), (E.NOT_READY, CLOSE_TRY_AGAIN), (E.MODEL_UNAVAILABLE, CLOSE_TRY_AGAIN),
    (E.TOO_MANY_SESSIONS, CLOSE_TRY_AGAIN), (E.INTERNAL_ERROR, CLOSE_INTERNAL), (E.INVALID_API_KEY, CLOSE_POLICY),
    (E.QUOTA_EXCEEDED, CLOSE_POLICY), (E.SESSION_EXPIRED, CLOSE_POLICY), (E.INVALID_REQUEST, CLOSE_POLICY),
    (E.ADMIN_DISABLED, CLOSE_POLICY),
])
def test_close_codes(kind, code):
    assert close_code(LivenessError(kind, "m")) == code
    assert (CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_TRY_AGAIN) == (1000, 1008, 1009, 1011, 1013)


def test_parse_start_normalises():
    assert parse_start(json.dumps({"type": "start", "api_key": "lk_1"})) == {
        "api_key": "lk_1", "auth_token": None, "challenges": None, "admin_key": None}
    assert parse_start(json.dumps({"type": "start", "auth_token": "eyJ.a.b"})) == {
        "api_key": None, "auth_token": "eyJ.a.b", "challenges": None, "admin_key": None}
    assert parse_start(json.dumps({"type": "start", "api_key": "k", "challenges": ["blink"] * 8, "admin_key": "a"}))[
        "challenges"] == ["blink"] * 8


@pytest.mark.parametrize(("doc", "kind", "message"), [
    ("[1]", E.INVALID_REQUEST, 'The first message must be {"type": "start", "api_key": ...}.'),
    ("{oops", E.INVALID_REQUEST, "The start message is not valid JSON."),
    ({"type": "start", "api_key": ""}, E.MISSING_API_KEY, "The start message needs an api_key (or a session's auth_token)."),
    ({"type": "start", "api_key": 5}, E.INVALID_REQUEST, "'api_key' must be a string."),
    ({"type": "start", "api_key": "k", "challenges": ["blink"] * 9}, E.INVALID_REQUEST,
     "'challenges' must be a list of 1-8 of: blink, turn_left, turn_right, look_center, smile, open_mouth, raise_brows, wink."),
    ({"type": "start", "api_key": "k", "admin_key": 1}, E.INVALID_REQUEST, "'admin_key' must be a string."),
    ({"type": "start", "auth_token": "eyJ.a.b", "admin_key": "x"}, E.INVALID_REQUEST, "A session token cannot choose challenges."),
    ({"type": "start", "auth_token": "eyJ.a.b", "challenges": ["blink"]}, E.INVALID_REQUEST,
     "A session token cannot choose challenges."),
])
def test_parse_start_refusals(doc, kind, message):
    with pytest.raises(LivenessError) as e:
        parse_start(doc if isinstance(doc, str) else json.dumps(doc))
    assert (e.value.kind, e.value.message) == (kind, message)


DEEP = "[" * 1000 + "]" * 1000  # ~2 KB: under the message limit, far over the parser's depth


@pytest.mark.parametrize("text", ['{"type": "start", "api_key": "k", "x": ' + DEEP + "}", DEEP, "{" + '"a":{' * 40 + "}" * 41])
def test_a_start_message_nested_past_the_parsers_limit_is_invalid_request(text):
    assert len(text.encode()) <= MAX_START_BYTES
    with pytest.raises(LivenessError) as e:
        parse_start(text)
    assert (e.value.kind, e.value.message, e.value.details) == (
        E.INVALID_REQUEST, "The start message is nested too deeply (the limit is 32 levels).", {"max_depth": 32})


def test_a_start_message_nested_within_the_limit_is_parsed():
    doc = {"type": "start", "api_key": "k", "x": json.loads("[" * 30 + "]" * 30)}
    assert parse_start(json.dumps(doc))["api_key"] == "k"


def test_the_start_message_limit_counts_bytes_not_characters():
    padding = "é" * ((MAX_START_BYTES - 60) // 2 + 10)  # under 4096 characters, over 4096 bytes
    text = json.dumps({"type": "start", "api_key": "k", "pad": padding}, ensure_ascii=False)
    assert len(text) < MAX_START_BYTES < len(text.encode())
    with pytest.raises(LivenessError) as e:
        parse_start(text)
    assert e.value.message == f"The start message exceeds {MAX_START_BYTES} bytes."


# -- the socket against a scripted service ------------------------------------------------------------------


class Scripted:
    """start() answers one step; process() answers what ``script`` says for the frame's bytes."""

    def __init__(self, **script: Any) -> None:
        self.script = script
        self.frames: list[bytes] = []
        self.starts: list[tuple[Any, ...]] = []

    async def start(self, credential, challenges=None, admin=False):
        self.starts.append((credential, challenges, admin))
        return {"session_id": "s1", "instruction": "Blink", "current_step": 1, "total_steps": 2, "expires_in_minutes": 10.0}

    async def process(self, credential, session_id, frame):
        self.frames.append(frame)
        outcome = self.script.get(frame.decode(errors="replace"))
        if isinstance(outcome, BaseException):
            raise outcome
        return {"face_detected": True, "instruction": "Blink", "step_completed": False, "current_step": 1,
                "total_steps": 2, "reason": None, "passive_score": 0.8, "verification_complete": False}

    async def complete(self, credential, session_id):
        return {"verdict": "failed", "steps_completed": 0, "verification_time": 1.0, "result_token": "t"}


def client(service, sha=ADMIN_SHA, **options) -> TestClient:
    return TestClient(Starlette(routes=challenge_ws_routes(lambda: service, lambda: sha, min_frame_interval=0.0, **options)))


def start(ws, **fields) -> dict:
    ws.send_text(json.dumps({"type": "start", "api_key": "lk_1", **fields}))
    event = ws.receive_json()
    assert event["type"] == "challenge", event
    return event


def closed_with(ws) -> int:
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return closed.value.code


def test_cancel_closes_normally():
    svc = Scripted()
    with client(svc).websocket_connect(PATH) as ws:
        start(ws)
        ws.send_text(json.dumps({"type": "cancel"}))
        assert closed_with(ws) == CLOSE_NORMAL
    assert svc.frames == []


def test_text_other_than_cancel_after_start_is_a_protocol_error():
    with client(Scripted()).websocket_connect(PATH) as ws:
        start(ws)
        ws.send_text(json.dumps({"type": "frame", "data": "AAAA"}))
        err = ws.receive_json()
        assert err == {"type": "error", "code": "invalid_request", "status": 400,
                       "message": 'After "start" send binary JPEG frames or {"type": "cancel"}.'}
        assert closed_with(ws) == CLOSE_POLICY


def test_an_empty_binary_message_is_ignored():
    svc = Scripted()
    with client(svc).websocket_connect(PATH) as ws:
        start(ws)
        ws.send_bytes(b"")
        ws.send_bytes(b"real")
        event = ws.receive_json()
        assert (event["type"], event["passive_score"]) == ("feedback", 0.8)
        assert set(event) == {"type", "face_detected", "instruction", "step_completed", "current_step", "total_steps",
                              "reason", "passive_score"}
    assert svc.frames == [b"real"]


@pytest.mark.parametrize(("sha", "code", "message"), [
    (None, "admin_disabled", "Admin options are off: set LIVENESS_ADMIN_KEY_SHA256."),
    (ADMIN_SHA, "invalid_admin_key", "Wrong admin_key."),
])
def test_admin_options_refused(sha, code, message):
    svc = Scripted()
    with client(svc, sha=sha).websocket_connect(PATH) as ws:
        ws.send_text(json.dumps({"type": "start", "api_key": "lk_1", "challenges": ["blink"], "admin_key": "guess"}))
        err = ws.receive_json()
        assert (err["code"], err["message"]) == (code, message)
        assert closed_with(ws) == CLOSE_POLICY
    assert svc.starts == []


def test_challenges_without_an_admin_key_go_to_the_service_as_non_admin():
    svc = Scripted()
    with client(svc).websocket_connect(PATH) as ws:
        start(ws, challenges=["smile"])
    assert svc.starts == [("lk_1", ["smile"], False)]  # the service refuses a non-admin choice


@pytest.mark.parametrize(("raised", "code", "status", "close"), [
    (RuntimeError("a bug"), "internal_error", 500, CLOSE_INTERNAL),
    (LivenessError(E.MODEL_UNAVAILABLE, "Triton is away."), "model_unavailable", 503, CLOSE_TRY_AGAIN),
    (LivenessError(E.SESSION_EXPIRED, "gone"), "session_expired", 410, CLOSE_POLICY),
])
def test_a_failure_mid_session_is_an_error_event_and_its_close_code(raised, code, status, close):
    with client(Scripted(boom=raised)).websocket_connect(PATH) as ws:
        start(ws)
        ws.send_bytes(b"boom")
        err = ws.receive_json()
        assert (err["type"], err["code"], err["status"]) == ("error", code, status)
        if code == "internal_error":
            assert err["message"] == "Internal error."  # nothing of the exception leaks
        assert closed_with(ws) == close


def test_the_start_message_must_come_in_time():
    with client(Scripted(), start_timeout=0.01).websocket_connect(PATH) as ws:
        err = ws.receive_json()  # nothing sent
        assert (err["code"], err["message"]) == ("invalid_request", "No message within the time limit.")
        assert closed_with(ws) == CLOSE_POLICY


def test_an_idle_socket_is_closed():
    with client(Scripted(), idle_timeout=0.01).websocket_connect(PATH) as ws:
        start(ws)
        err = ws.receive_json()  # no frame follows
        assert (err["code"], err["message"]) == ("invalid_request", "No message within the time limit.")
        assert closed_with(ws) == CLOSE_POLICY


# -- a session token on the real services -------------------------------------------------------------------


@pytest.fixture
def services(make_core, clock):
    core = make_core()
    challenges = ChallengeService(core, core.settings, measure=False, clock=clock)
    sessions = SessionService(core, core.settings, challenges=challenges, clock=clock)  # as liveness.app wires them
    yield core, challenges, sessions
    sessions.close()
    challenges.close()


def run_token_session(services, clock, send_results: bool) -> tuple[dict, dict, list[dict], dict, int]:
    core, challenges, sessions = services
    key = core.keys.create("app", 5).raw_key
    made = asyncio.run(sessions.create(key, parse_params({"mode": "challenge", "send_results_to_client": send_results}), None))
    app = Starlette(routes=challenge_ws_routes(lambda: challenges, lambda: None, get_sessions=lambda: sessions,
                                               min_frame_interval=0.0))
    frame = jpeg()
    with TestClient(app).websocket_connect(PATH) as ws:
        ws.send_text(json.dumps({"type": "start", "auth_token": made["auth_token"]}))
        first = ws.receive_json()
        ws.send_bytes(frame)
        feedback = [ws.receive_json()]
        clock.advance(core.settings.challenge_step_timeout_s + 1)  # the step times out: the session fails
        ws.send_bytes(frame)
        feedback.append(ws.receive_json())
        result = ws.receive_json()
        code = closed_with(ws)
    return made, first, feedback, result, code


def test_a_session_token_that_hides_results(services, clock):
    made, first, feedback, result, code = run_token_session(services, clock, send_results=False)
    assert (first["type"], first["current_step"], first["total_steps"], first["expires_in_minutes"]) == ("challenge", 1, 3, 10.0)
    assert [f["passive_score"] for f in feedback] == [None, None]  # the client never sees scores
    assert feedback[0]["face_detected"] is True and feedback[1]["reason"] is not None
    assert result == {"type": "result", "session": {"session_id": made["session_id"], "attempt_id": 1,
                                                    "status": "completed", "attempts_remaining": 2}}
    assert code == CLOSE_NORMAL
    core = services[0]
    assert used(core, "app") == 1  # the session's unit; the challenge itself is never charged


def test_a_session_token_that_sends_results(services, clock):
    made, _, feedback, result, _ = run_token_session(services, clock, send_results=True)
    assert feedback[0]["passive_score"] == pytest.approx(0.9, abs=1e-6)
    assert (result["type"], result["verdict"], result["steps_completed"]) == ("result", "failed", 0)
    assert result["result_token"].count(".") == 2 and result["verification_time"] >= 21
    assert result["session"]["result"]["decision"] == "spoofface"
    assert used(services[0], "app") == 1


def test_a_spent_or_forged_token_is_refused_at_start(services):
    core, challenges, sessions = services
    app = Starlette(routes=challenge_ws_routes(lambda: challenges, lambda: None, get_sessions=lambda: sessions))
    with TestClient(app).websocket_connect(PATH) as ws:
        ws.send_text(json.dumps({"type": "start", "auth_token": "eyJhbGciOiJIUzI1NiJ9.e30.x"}))
        err = ws.receive_json()
        assert (err["code"], err["status"]) == ("invalid_session_token", 401)
        assert closed_with(ws) == CLOSE_POLICY
    key = core.keys.create("app", 5).raw_key
    passive = asyncio.run(sessions.create(key, parse_params({"mode": "passive"}), None))
    with TestClient(app).websocket_connect(PATH) as ws:
        ws.send_text(json.dumps({"type": "start", "auth_token": passive["auth_token"]}))
        err = ws.receive_json()
        assert (err["code"], err["status"]) == ("token_mode_mismatch", 403)


# -- hostile JSON over the socket, the frame clock ------------------------------------------------------------


def test_a_deeply_nested_start_message_is_an_invalid_request_event_not_our_failure():
    svc = Scripted()
    with client(svc).websocket_connect(PATH) as ws:
        ws.send_text('{"type": "start", "api_key": "lk_1", "x": ' + DEEP + "}")
        err = ws.receive_json()
        assert err == {"type": "error", "code": "invalid_request", "status": 400,
                       "message": "The start message is nested too deeply (the limit is 32 levels)."}
        assert closed_with(ws) == CLOSE_POLICY
    assert svc.starts == []


@pytest.mark.parametrize(("text", "message"), [
    ('{"type": "cancel", "x": ' + DEEP + "}", "The message is nested too deeply (the limit is 32 levels)."),
    (DEEP, "The message is nested too deeply (the limit is 32 levels)."),
    (json.dumps({"type": "cancel", "pad": "x" * MAX_START_BYTES}), 'After "start" send binary JPEG frames or {"type": "cancel"}.'),
    ("{not json", 'After "start" send binary JPEG frames or {"type": "cancel"}.'),
    ('["cancel"]', 'After "start" send binary JPEG frames or {"type": "cancel"}.'),
])
def test_hostile_text_after_start_is_an_invalid_request_event(text, message):
    svc = Scripted()
    with client(svc).websocket_connect(PATH) as ws:
        start(ws)
        ws.send_text(text)
        err = ws.receive_json()
        assert (err["type"], err["code"], err["status"], err["message"]) == ("error", "invalid_request", 400, message)
        assert closed_with(ws) == CLOSE_POLICY
    assert svc.frames == []


def test_the_frame_interval_is_timed_on_the_injected_clock(clock):
    svc = Scripted()
    app = Starlette(routes=challenge_ws_routes(lambda: svc, lambda: ADMIN_SHA, min_frame_interval=0.1, clock=clock))
    with TestClient(app).websocket_connect(PATH) as ws:
        start(ws)
        ws.send_bytes(b"one")
        assert ws.receive_json()["reason"] is None  # analysed
        ws.send_bytes(b"two")  # the clock has not moved: too soon
        assert ws.receive_json()["reason"] == "frame_too_fast"
        clock.advance(0.05)
        ws.send_bytes(b"three")  # still within the interval of "one"
        assert ws.receive_json()["reason"] == "frame_too_fast"
        clock.advance(0.05)
        ws.send_bytes(b"four")
        assert ws.receive_json()["reason"] is None
    assert svc.frames == [b"one", b"four"]


@pytest.mark.parametrize("chosen", [[], ["blink"] * 9, [""], ["levitate"], "blink"])
def test_an_admins_choice_is_checked_by_the_service_and_a_refusal_costs_nothing(services, chosen):
    core, challenges, _ = services
    key = core.keys.create("ws-admin", 5).raw_key
    with client(challenges).websocket_connect(PATH) as ws:
        ws.send_text(json.dumps({"type": "start", "api_key": key, "challenges": chosen, "admin_key": ADMIN}))
        err = ws.receive_json()
        assert (err["type"], err["code"]) == ("error", "invalid_request")
        assert err["message"].startswith("'challenges' must be a list of 1-8 of: blink,")
        assert closed_with(ws) == CLOSE_POLICY
    with client(challenges).websocket_connect(PATH) as ws:
        first = start(ws, api_key=key, challenges=["smile", "blink"], admin_key=ADMIN)
        assert (first["instruction"], first["current_step"], first["total_steps"]) == ("Please smile", 1, 2)
    assert used(core, "ws-admin") == 1  # the one session that started
