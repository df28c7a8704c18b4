"""The admin API (edge/admin.py, ``/v1/admin/...``): the admin key first (403 admin_disabled
when none is configured, 401 invalid_admin_key when wrong), then 503 while loading, 404
unknown_model, 400 for a bad body, 409 rollout_rejected for an operation the rollout manager
refuses; the model table's fields; promote / rollback / canary / shadow moving this worker's
routing at once (README "Model versions and rollouts").  The real core on the fake backend;
the parity check of a version (which would run ONNX Runtime) is replaced by a recorder."""

from __future__ import annotations

import hashlib

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

import liveness.rollout.manager as manager
from edge.admin import admin_routes
from liveness.rollout.validate import Validation, ValidationError

ADMIN = "rollout-admin-key"
ADMIN_SHA = hashlib.sha256(ADMIN.encode()).hexdigest()
H = {"X-Admin-Key": ADMIN}


@pytest.fixture
def validated(monkeypatch) -> list[tuple[str, int]]:
    """Every parity check asked for; a version 99 fails it."""
    calls: list[tuple[str, int]] = []

    def fake_validate(repository, model, version):
        calls.append((model, version))
        if version == 99:
            raise ValidationError(f"{model} version {version}: parity 1.0e+00 exceeds 1e-04")
        return Validation(model, version, "softmax", 1e-6, 1e-4, 8)

    monkeypatch.setattr(manager, "validate_version", fake_validate)
    return calls


@pytest.fixture
def core(make_core):
    return make_core()


def client(core, sha: str | None = ADMIN_SHA, app_ready: bool = True) -> TestClient:
    return TestClient(Starlette(routes=admin_routes(lambda: core if app_ready else None, lambda: sha)))


def model(listing: dict, name: str) -> dict:
    (row,) = [m for m in listing["models"] if m["model"] == name]
    return row


def test_the_admin_key_comes_first(core):
    r = client(core, sha=None).get("/v1/admin/models", headers=H)
    assert (r.status_code, r.json()) == (403, {"error": {"code": "admin_disabled", "message":
                                                         "The admin API is off: set LIVENESS_ADMIN_KEY_SHA256 (see `liveness admin-key`)."}})
    for headers in ({}, {"X-Admin-Key": "wrong"}, {"Authorization": f"Bearer {ADMIN}"}):
        r = client(core).get("/v1/admin/models", headers=headers)
        assert (r.status_code, r.json()) == (401, {"error": {"code": "invalid_admin_key", "message": "Missing or wrong X-Admin-Key."}})
    r = client(core, app_ready=False).get("/v1/admin/models", headers={"X-Admin-Key": "wrong"})
    assert r.status_code == 401  # not 503: a stranger learns nothing, not even that the worker is loading
    r = client(core, app_ready=False).get("/v1/admin/models", headers=H)
    assert (r.status_code, r.json()["error"]["code"], r.headers["retry-after"]) == (503, "not_ready", "1")


def test_the_model_table(core):
    r = client(core).get("/v1/admin/models", headers=H)
    assert r.status_code == 200
    listing = r.json()
    assert [m["model"] for m in listing["models"]] == core.models
    v2 = model(listing, "minifasnet_v2")
    assert v2 == {"model": "minifasnet_v2", "versions_on_disk": [1, 2], "loaded_here": [1, 2], "policy": {
        "mode": "latest", "percent": 0.0}, "serving": 2, "candidate": None, "mode": "latest", "percent": 0.0,
        "previous": None}
    assert model(listing, "retinaface")["versions_on_disk"] == [1]


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/v1/admin/models/nope/load"), ("post", "/v1/admin/models/nope/promote"),
    ("post", "/v1/admin/models/nope/rollback"), ("post", "/v1/admin/models/nope/canary"),
    ("post", "/v1/admin/models/nope/shadow"),
])
def test_an_unknown_model_is_404(core, validated, method, path):
    r = getattr(client(core), method)(path, headers=H, json={"version": 1, "percent": 5})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_model"
    assert r.json()["error"]["message"] == f"Unknown model 'nope'; known: {', '.join(core.models)}."
    assert validated == []


@pytest.mark.parametrize(("body", "message"), [
    (b"{", "The body is not valid JSON."),
    (b"[1]", "The JSON body must be an object."),
    (b"", "'version' (an integer) is required."),
    (b'{"version": "two"}', "'version' (an integer) is required."),
    (b'{"version": null}', "'version' (an integer) is required."),
])
def test_a_bad_body_is_400(core, validated, body, message):
    for op in ("load", "promote"):
        r = client(core).post(f"/v1/admin/models/minifasnet_v2/{op}", headers={**H, "Content-Type": "application/json"},
                              content=body)
        assert (r.status_code, r.json()) == (400, {"error": {"code": "invalid_request", "message": message}})
    assert validated == []


def test_load_validates_and_loads_here(core, validated):
    backend = core.backend
    r = client(core).post("/v1/admin/models/minifasnet_v2/load", headers=H, json={"version": 1})
    assert r.status_code == 200
    assert r.json() == {"loaded": {"model": "minifasnet_v2", "version": 1, "metric": "softmax", "max_diff": 1e-6,
                                   "tolerance": 1e-4, "inputs": 8}}
    assert validated == [("minifasnet_v2", 1)] and backend.loads[-1] == ("minifasnet_v2", 1)


def test_a_version_that_is_not_on_disk_or_fails_parity_is_409(core, validated, monkeypatch):
    r = client(core).post("/v1/admin/models/minifasnet_v2/promote", headers=H, json={"version": 7})
    assert (r.status_code, r.json()["error"]) == (409, {"code": "rollout_rejected",
                                                        "message": "minifasnet_v2 has no version 7 (on disk: [1, 2])"})
    assert validated == []  # refused before any parity check
    on_disk = core.book.versions_on_disk
    monkeypatch.setattr(core.book, "versions_on_disk",
                        lambda m: [*on_disk(m), 99] if m == "minifasnet_v2" else on_disk(m))  # 99 fails parity
    r = client(core).post("/v1/admin/models/minifasnet_v2/load", headers=H, json={"version": 99})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "rollout_rejected")
    assert "parity" in r.json()["error"]["message"]


def test_promote_then_rollback_moves_this_workers_routing(core, validated):
    c = client(core)
    r = c.post("/v1/admin/models/minifasnet_v2/promote", headers=H, json={"version": 1})
    assert r.status_code == 200
    row = model(r.json(), "minifasnet_v2")
    assert (row["serving"], row["mode"], row["policy"], row["previous"]) == (1, "pin", {"mode": "pin", "version": 1, "percent": 0.0}, 2)
    assert core.routing.router.table["minifasnet_v2"].stable == 1  # this worker serves it now
    r = c.post("/v1/admin/models/minifasnet_v2/rollback", headers=H)
    row = model(r.json(), "minifasnet_v2")
    assert (r.status_code, row["serving"], row["previous"]) == (200, 2, None)
    r = c.post("/v1/admin/models/minifasnet_v2/rollback", headers=H)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "rollout_rejected")
    assert "nothing to roll back to" in r.json()["error"]["message"]


@pytest.mark.parametrize("mode", ["canary", "shadow"])
def test_experiments(core, validated, mode):
    c = client(core)
    path = f"/v1/admin/models/minifasnet_v1se/{mode}"
    for body in ({"version": 1}, {"version": 1, "percent": "lots"}, {"percent": 5}, {"version": 1, "percent": True},
                 {"version": 1.5, "percent": 5}, {"version": 1, "percent": [5]}):
        r = c.post(path, headers=H, json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    r = c.post(path, headers=H, json={"version": 1, "percent": 150})
    assert (r.status_code, r.json()["error"]) == (409, {"code": "rollout_rejected", "message": "percent must be within 0..100"})
    r = c.post(path, headers=H, json={"version": 1, "percent": 25})
    assert r.status_code == 200
    row = model(r.json(), "minifasnet_v1se")
    assert (row["serving"], row["candidate"], row["mode"], row["percent"]) == (2, 1, mode, 25.0)
    assert core.routing.router.table["minifasnet_v1se"].mode == mode
    r = c.post("/v1/admin/models/minifasnet_v1se/rollback", headers=H)  # stopping an experiment
    row = model(r.json(), "minifasnet_v1se")
    assert (row["mode"], row["serving"], row["candidate"]) == ("pin", 2, None)


def test_shadow_report(core):
    c = client(core)
    assert c.get("/v1/admin/shadow-report", headers=H).json() == {"shadow": []}
    for p_stable, p_candidate in ((0.9, 0.8), (0.9, 0.3), (0.2, 0.1), (0.7, 0.6)):
        core.policy_store.record_shadow("minifasnet_v2", 2, 1, p_stable, p_candidate, 0.5)
    (row,) = c.get("/v1/admin/shadow-report", headers=H).json()["shadow"]
    assert {k: row[k] for k in ("model", "stable", "candidate", "samples", "agree", "agreement")} == {
        "model": "minifasnet_v2", "stable": 2, "candidate": 1, "samples": 4, "agree": 3, "agreement": 0.75}
    assert row["mean_abs_diff"] == pytest.approx(0.225) and row["max_abs_diff"] == pytest.approx(0.6)
    assert c.get("/v1/admin/shadow-report").status_code == 401


@pytest.mark.parametrize("version", [1.9, True, False, 1.0, "1.5", [1], {"v": 1}])
def test_a_version_that_is_not_an_integer_is_400(core, validated, version):
    r = client(core).post("/v1/admin/models/minifasnet_v2/promote", headers=H, json={"version": version})
    assert r.status_code == 400, f"promoted: serving {model(r.json(), 'minifasnet_v2')['serving']}"
    assert r.json()["error"]["code"] == "invalid_request" and validated == []


@pytest.mark.parametrize(("version", "serving"), [(1, 1), ("1", 1), (" 1 ", 1)])
def test_a_version_is_a_json_integer_or_a_string_of_digits(core, validated, version, serving):
    r = client(core).post("/v1/admin/models/minifasnet_v2/promote", headers=H, json={"version": version})
    assert r.status_code == 200 and model(r.json(), "minifasnet_v2")["serving"] == serving


def test_an_unexpected_failure_is_the_internal_error_envelope(core, monkeypatch):
    import sqlite3

    def locked(*a, **k):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(core.book, "promote", locked)
    r = client(core).post("/v1/admin/models/minifasnet_v2/promote", headers={**H, "X-Request-ID": "adm-1"},
                          json={"version": 1})
    assert (r.status_code, r.json()) == (500, {"error": {"code": "internal_error",
                                                         "message": "The request failed on the server."},
                                               "request_id": "adm-1"})
    assert r.headers["x-request-id"] == "adm-1"
