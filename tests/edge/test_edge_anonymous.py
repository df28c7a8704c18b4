"""Anonymous routes (``anonymous_routes``, README "Keys"): a caller that sends no credential on a
route the operator opened is charged to the key the route names, through the one admission path;
every other route, and any request that does send a credential, is judged as before.  The real
core on the fake backend; no model is loaded."""

from __future__ import annotations

import pytest

from edge import apis
from edge.credentials import anonymous_key, or_route_key
from liveness.keys import RouteKey
from liveness.settings import Settings
from tests.edge.helpers import Svc, b64, body_of, ctx, jpeg, served, used

IMAGE = jpeg()


def test_exact_paths_win_then_the_longest_prefix():
    routes = {"/status/*": "kiosk", "/status/special": "vip", "/s*": "short", "/v1/video-liveness": "findface"}
    assert anonymous_key(routes, "/v1/video-liveness") == "findface"
    assert anonymous_key(routes, "/status/special") == "vip"
    assert anonymous_key(routes, "/status/abc") == "kiosk"
    assert anonymous_key(routes, "/start") == "short"
    assert anonymous_key(routes, "/v1/liveness") is None
    assert anonymous_key(routes, "/v1/video-liveness/x") is None  # exact entries are not prefixes


def test_a_sent_credential_is_never_replaced():
    routes = {"/v1/liveness": "findface"}
    assert or_route_key("lk_sent", routes, "/v1/liveness") == "lk_sent"
    assert or_route_key(None, routes, "/v1/liveness") == RouteKey("findface")
    assert or_route_key(None, routes, "/liveness") is None
    assert or_route_key(None, {}, "/v1/liveness") is None


def test_settings_take_a_json_object_from_the_environment(monkeypatch):
    monkeypatch.setenv("LIVENESS_ANONYMOUS_ROUTES", '{"/v1/video-liveness": "findface", "/status/*": "kiosk"}')
    assert Settings().anonymous_routes == {"/v1/video-liveness": "findface", "/status/*": "kiosk"}
    monkeypatch.setenv("LIVENESS_ANONYMOUS_ROUTES", '{"v1/no-slash": "findface"}')
    with pytest.raises(ValueError):
        Settings()
    assert Settings.model_fields["anonymous_routes"].default == {}  # off by default


def native(svc: Svc, headers: dict[str, str] | None = None, path: str = "/v1/liveness"):
    body = ('{"image": "%s"}' % b64(IMAGE)).encode()
    return served(apis.native_liveness(svc, body, ctx(headers, content_type="application/json", path=path)))


def test_an_open_route_charges_its_named_key(make_core):
    core = make_core(anonymous_routes={"/v1/liveness": "findface"})
    core.keys.create("findface", 5)
    r = native(Svc(core))
    assert r.status_code == 200 and body_of(r)["decision"] in ("live", "spoof")
    assert used(core, "findface") == 1


def test_the_named_key_may_be_given_by_key_id(make_core):
    core = make_core()
    issued = core.keys.create("door-7", 5)
    core.settings.anonymous_routes = {"/v1/liveness": issued.info.key_id}
    assert native(Svc(core)).status_code == 200
    assert used(core, issued.info.key_id) == 1


def test_closed_routes_and_wrong_keys_are_refused_as_before(make_core):
    core = make_core(anonymous_routes={"/other": "findface"})
    core.keys.create("findface", 5)
    r = native(Svc(core))
    assert (r.status_code, body_of(r)["error"]["code"]) == (401, "missing_api_key")
    core.settings.anonymous_routes = {"/v1/liveness": "findface"}
    r = native(Svc(core), {"x-api-key": "lk_wrong"})  # a credential that was sent is judged by itself
    assert (r.status_code, body_of(r)["error"]["code"]) == (401, "invalid_api_key")
    assert used(core, "findface") == 0


def test_revoking_the_named_key_closes_the_route_and_a_spent_quota_holds(make_core):
    core = make_core(anonymous_routes={"/v1/liveness": "findface"})
    core.keys.create("findface", 1)
    assert native(Svc(core)).status_code == 200
    r = native(Svc(core))
    assert (r.status_code, body_of(r)["error"]["code"]) == (429, "quota_exceeded")
    core.keys.revoke("findface")
    r = native(Svc(core))
    assert (r.status_code, body_of(r)["error"]["code"]) == (401, "invalid_api_key")
    assert used(core, "findface") == 1


def test_a_named_key_that_does_not_exist_is_a_clear_refusal(make_core):
    core = make_core(anonymous_routes={"/v1/liveness": "nobody"})
    r = native(Svc(core))
    err = body_of(r)["error"]
    assert (r.status_code, err["code"]) == (401, "invalid_api_key")
    assert "anonymous_routes" in err["message"]


def test_bad_input_on_an_open_route_is_not_charged(make_core):
    core = make_core(anonymous_routes={"/v1/liveness": "findface"})
    core.keys.create("findface", 5)
    r = served(apis.native_liveness(Svc(core), b'{"image": "bm90IGFuIGltYWdl"}',
                                    ctx(content_type="application/json")))
    assert r.status_code in (400, 415, 422)
    assert used(core, "findface") == 0
