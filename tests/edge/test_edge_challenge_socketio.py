"""The Socket.IO channel (edge/challenge_socketio.py) with python-socketio's own AsyncClient, over
real HTTP and WebSocket on a loopback port: uvicorn serves the endpoint's Starlette mount in the
test's event loop, in front of the real ChallengeService on the real core (fake backend, fake
clock, no landmark model: steps never complete, so a session ends by its step timeout on the
fake clock).  Covered: the seed's events (connect -> challenge, frame -> feedback, result with a
token), every REST field on them, the credential sources and the anonymous route key, one unit
per session through the admission path and none for refusals or bad frames, bad frames as error
events that leave the session going, the frame clock, and a disconnect that leaves the session
to expire."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import socketio
from starlette.applications import Starlette

from edge.challenge_socketio import PATH, challenge_socketio_routes, frame_payload, seed_challenge, start_request
from liveness import errors as E
from liveness.errors import LivenessError
from liveness.imaging import ImageLimits
from liveness.keys import RouteKey
from tests.edge.helpers import b64, jpeg, used
from tests.socketio_helpers import AsyncEvents, challenge_service, serve

FRAME = jpeg()
EVENT_WAIT_S = 60.0  # a guard against a hung test only; every wait ends on an event


@pytest.fixture
def service(make_core, clock):
    yield from challenge_service(make_core, clock)


@asynccontextmanager
async def served(svc: Any, clock: Any, routes: dict[str, str] | None = None) -> AsyncIterator[str]:
    """The endpoint on a loopback port in this loop; yields its URL."""
    app = Starlette(routes=challenge_socketio_routes(lambda: svc, lambda: None, anonymous_routes=lambda: routes or {},
                                                     max_frame_bytes=svc.settings.max_image_bytes,
                                                     min_frame_interval=0.5, clock=clock))
    async with serve(app) as port:
        yield f"http://127.0.0.1:{port}"


async def connect(url: str, **options: Any) -> tuple[socketio.AsyncClient, AsyncEvents]:
    client = socketio.AsyncClient(reconnection=False)
    events = AsyncEvents(client, EVENT_WAIT_S)
    await client.connect(url, wait_timeout=EVENT_WAIT_S, **options)
    return client, events


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- pure parts ------------------------------------------------------------------------------------------


def test_seed_challenge_names():
    assert [seed_challenge(s) for s in ("blink", "look_center", "turn_left", "open_mouth", None)] == [
        "BLINK", "CENTER", "TURN_LEFT", "OPEN_MOUTH", None]


def test_credential_sources_in_order():
    env = {"QUERY_STRING": "api_key=lk_query", "HTTP_X_API_KEY": "lk_header"}
    assert start_request({"api_key": "lk_auth"}, env, {})["api_key"] == "lk_auth"
    assert start_request(None, env, {})["api_key"] == "lk_header"
    assert start_request(None, {"QUERY_STRING": "api_key=lk_query"}, {})["api_key"] == "lk_query"
    assert start_request(None, {"HTTP_AUTHORIZATION": "Bearer lk_bearer"}, {})["api_key"] == "lk_bearer"
    assert start_request({}, {}, {PATH: "kiosk"})["api_key"] == RouteKey("kiosk")
    assert start_request({"api_key": "lk_sent"}, {}, {PATH: "kiosk"})["api_key"] == "lk_sent"  # a sent key is judged
    with pytest.raises(LivenessError) as e:
        start_request({}, {}, {"/start": "kiosk"})  # only the /socket.io/ entry opens this endpoint
    assert e.value.kind == E.MISSING_API_KEY
    with pytest.raises(LivenessError) as e:
        start_request({"api_key": "lk_1", "challenges": "blink"}, {}, {})
    assert e.value.kind == E.INVALID_REQUEST


def test_frame_payload_forms_and_limits():
    limits = ImageLimits(max_bytes=len(FRAME) + 10)
    data_uri = "data:image/jpeg;base64," + b64(FRAME)
    for payload in (FRAME, bytearray(FRAME), b64(FRAME), data_uri, {"image": FRAME}, {"image": b64(FRAME)}):
        assert frame_payload(payload, limits) == FRAME
    for payload, kind in ((FRAME + b"x" * 20, E.IMAGE_TOO_LARGE), (b64(FRAME + b"x" * 20), E.IMAGE_TOO_LARGE),
                          ("%%%", E.INVALID_BASE64), (None, E.MISSING_IMAGE), ({"x": 1}, E.MISSING_IMAGE),
                          (42, E.INVALID_REQUEST)):
        with pytest.raises(LivenessError) as e:
            frame_payload(payload, limits)
        assert e.value.kind == kind, payload


# -- the endpoint over the wire ---------------------------------------------------------------------------


@pytest.mark.parametrize("transports", [None, ["websocket"]])
def test_a_session_over_socketio_with_the_seeds_events(service, clock, transports):
    core, svc = service
    key = core.keys.create("app", 5).raw_key

    async def go() -> None:
        async with served(svc, clock) as url:
            client, events = await connect(url, auth={"api_key": key}, transports=transports)
            name, challenge = await events.next()
            assert name == "challenge"
            assert challenge["success"] is True and challenge["challenge"] in ("BLINK", "CENTER")
            assert challenge["step"] in ("blink", "look_center") and challenge["current_step"] == 1
            assert challenge["total_steps"] == 2 and challenge["expires_in_minutes"] == 10
            assert isinstance(challenge["expires_in_minutes"], int) and challenge["session_id"]
            assert used(core, "app") == 1  # one unit, at the start

            await client.emit("frame", FRAME)  # binary attachment, as the seed's clients send
            name, fb = await events.next()
            assert name == "feedback" and fb["success"] is True and fb["face_detected"] is True
            assert fb["status"] == "INFO" and fb["message"] == fb["instruction"] and fb["reason"] is None
            assert fb["passive_score"] == pytest.approx(0.9, abs=1e-6)
            assert {"step_completed", "verification_complete", "verification_failed", "current_step",
                    "total_steps", "session_id"} <= set(fb)

            await client.emit("frame", b64(FRAME))  # the fake clock has not moved: too soon
            name, dropped = await events.next()
            assert (name, dropped["reason"], dropped["status"]) == ("feedback", "frame_too_fast", "INFO")

            clock.advance(svc.settings.challenge_step_timeout_s + 1)  # the step times out: the session fails
            await client.emit("frame", {"image": "data:image/jpeg;base64," + b64(FRAME)})
            name, failed = await events.next()
            assert (name, failed["status"], failed["verification_failed"]) == ("feedback", "FAIL", True)
            name, result = await events.next()
            assert name == "result"
            assert (result["status"], result["verdict"], result["success"]) == ("FAIL", "failed", False)
            assert result["token"] == result["result_token"] and result["token"].count(".") == 2
            assert result["verified_image"] is None and result["total_blinks"] == 0
            assert isinstance(result["timestamp"], str) and result["session_id"] == challenge["session_id"]
            assert (await events.next())[0] == "disconnect"  # the server ends the connection after the result
            await client.disconnect()
        assert used(core, "app") == 1  # frames and the verdict were paid for by the start

    run(go())


def test_refusals_at_connect_are_error_events_and_charge_nothing(service, clock):
    core, svc = service
    key = core.keys.create("app", 5).raw_key

    async def go() -> None:
        async with served(svc, clock) as url:
            for options, code in (({}, "missing_api_key"), ({"auth": {"api_key": "lk_wrong"}}, "invalid_api_key"),
                                  ({"auth": {"api_key": key, "challenges": "blink"}}, "invalid_request"),
                                  ({"auth": {"api_key": key, "challenges": ["blink"]}}, "invalid_request")):
                client, events = await connect(url, **options)
                name, err = await events.next()
                assert err == {"code": code, "message": err["message"], "status": err["status"], "success": False}
                assert isinstance(err["message"], str) and err["status"] in (400, 401)
                assert (await events.next())[0] == "disconnect"
                await client.disconnect()
        assert used(core, "app") == 0

    run(go())


def test_the_anonymous_route_key_pays_and_a_spent_quota_is_refused(service, clock):
    core, svc = service
    core.keys.create("kiosk", 1)

    async def go() -> None:
        async with served(svc, clock, routes={PATH: "kiosk"}) as url:
            client, events = await connect(url)  # only the URL, as the seed's clients
            assert (await events.next())[0] == "challenge"
            await client.disconnect()
            client, events = await connect(url)
            name, err = await events.next()
            assert (name, err["code"]) == ("error", "quota_exceeded")
            await client.disconnect()
        assert used(core, "kiosk") == 1

    run(go())


def test_bad_frames_are_error_events_and_the_session_goes_on(service, clock):
    core, svc = service
    key = core.keys.create("app", 5).raw_key
    too_big = b"\xff\xd8" + b"\0" * (svc.settings.max_image_bytes + 1)

    async def go() -> str:
        async with served(svc, clock) as url:
            client, events = await connect(url, auth={"api_key": key})
            sid = (await events.next())[1]["session_id"]
            for bad, code in ((b"not an image at all", "unsupported_format"), ("%%%", "invalid_base64"),
                              (too_big, "image_too_large"), (42, "invalid_request")):
                clock.advance(1)
                await client.emit("frame", bad)
                name, err = await events.next()
                assert (name, err["code"], err["success"]) == ("error", code, False), err
            clock.advance(1)
            await client.emit("frame", FRAME)  # the session is still there
            name, fb = await events.next()
            assert (name, fb["face_detected"]) == ("feedback", True)
            await client.disconnect()
            return sid

    sid = run(go())
    assert run(svc.status(key, sid))["frames"] == 1  # only the good frame was scored
    assert used(core, "app") == 1  # bad frames cost nothing


def test_a_disconnect_leaves_the_session_to_expire(service, clock):
    core, svc = service
    key = core.keys.create("app", 5).raw_key

    async def go() -> str:
        async with served(svc, clock) as url:
            client, events = await connect(url, headers={"X-API-Key": key})
            sid = (await events.next())[1]["session_id"]
            await client.emit("frame", FRAME)
            assert (await events.next())[0] == "feedback"
            await client.disconnect()
        return sid

    sid = run(go())
    status = run(svc.status(key, sid))
    assert (status["status"], status["frames"], status["completed"]) == ("active", 1, False)
    clock.advance(svc.settings.challenge_session_ttl_s + 1)
    with pytest.raises(LivenessError) as e:
        run(svc.status(key, sid))
    assert e.value.kind == E.SESSION_EXPIRED
    assert used(core, "app") == 1
