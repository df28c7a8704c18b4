"""Model rollouts on the served Bento: promote and roll back under load with zero failed
requests, canary stickiness, shadow sampling and its report, refusal of bad versions, admin auth."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter

import httpx
import pytest

from e2e_conftest import T1, create_key, run_cli

ADMIN_KEY = "lka_test-admin-key"
MODEL = "minifasnet_v2"


def _rollout_server(server_factory, tmp_path, model_repository, extra_env=None):
    if not (model_repository / MODEL / "2" / "model.onnx").is_file():
        pytest.fail("model_repository lacks minifasnet_v2 version 2 (INT8); run `make models`")
    policy = tmp_path / "policy.toml"
    policy.write_text('[minifasnet_v2]\nmode = "pin"\nversion = 1\n[minifasnet_v1se]\nmode = "pin"\nversion = 1\n')
    db = tmp_path / "rollout.sqlite3"
    return server_factory(db, {
        "LIVENESS_ADMIN_KEY_SHA256": hashlib.sha256(ADMIN_KEY.encode()).hexdigest(),
        "LIVENESS_MODEL_POLICY_FILE": str(policy),
        **(extra_env or {}),
    })


@pytest.fixture
def rollout_server(server_factory, tmp_path, model_repository):
    return _rollout_server(server_factory, tmp_path, model_repository)


@pytest.fixture
def triton_rollout_server(server_factory, tmp_path, model_repository, triton_server, triton_repository):
    """The same, served through a real tritonserver: versions load via its repository API."""
    from e2e_conftest import triton_env

    return _rollout_server(server_factory, tmp_path, model_repository, triton_env(triton_server, triton_repository))


def admin(srv, method: str, path: str, body: dict | None = None, key: str | None = ADMIN_KEY) -> httpx.Response:
    headers = {"X-Admin-Key": key} if key else {}
    return httpx.request(method, f"{srv.url}/v1/admin{path}", json=body, headers=headers, timeout=60)


def versions_used(doc: dict) -> dict[str, int]:
    return {m["name"]: m["version"] for m in doc["models"]}


def wait_for(cond, what: str, timeout: float = 180.0) -> None:
    """Poll ``cond`` until it holds; the deadline is only there to end a hung run."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["embedded", pytest.param("triton", marks=pytest.mark.triton)])
def test_promote_and_rollback_under_load_fail_no_request(backend, request):
    """Every step waits for what it needs to see (polling), never for a fixed time: the old
    sleeps assumed how many requests a machine answers per second and how soon every worker's
    refresh (each polls the policy store once per second, on its next request) lands."""
    srv = request.getfixturevalue("rollout_server" if backend == "embedded" else "triton_rollout_server")
    key = create_key(srv.db_path, 100_000)
    jpeg = T1.read_bytes()
    stop = threading.Event()
    statuses: Counter = Counter()
    seen_versions: list[int] = []
    failures: list[str] = []

    def post(c: httpx.Client) -> httpx.Response:
        return c.post(f"{srv.url}/v1/liveness", content=jpeg, headers={"X-API-Key": key, "Content-Type": "image/jpeg"})

    def hammer() -> None:
        with httpx.Client(timeout=120) as c:
            while not stop.is_set():
                try:
                    r = post(c)
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                    continue
                statuses[r.status_code] += 1
                if r.status_code != 200:
                    failures.append(r.text)
                elif r.json()["is_live"] is not True:
                    failures.append(f"not live: {r.text}")
                else:
                    seen_versions.append(versions_used(r.json())[MODEL])

    def served_since(mark: int) -> list[int]:
        return seen_versions[mark:]

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(seen_versions) >= 4 or failures, "4 answers before the promote")
        r = admin(srv, "POST", f"/models/{MODEL}/promote", {"version": 2})
        assert r.status_code == 200, r.text
        mark = len(seen_versions)
        wait_for(lambda: served_since(mark).count(2) >= 4 or failures, "4 answers of the promoted version")
        r = admin(srv, "POST", f"/models/{MODEL}/rollback")
        assert r.status_code == 200, r.text
        rolled_back = time.monotonic()
        mark = len(seen_versions)
        # every hammering connection has moved back: the last 8 answers are all version 1
        wait_for(lambda: (len(served_since(mark)) >= 8 and set(seen_versions[-8:]) == {1}) or failures,
                 "8 answers in a row of version 1 after the rollback")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert set(statuses) == {200}, statuses
    assert seen_versions[0] == 1, "the first answers did not come from the pinned version 1"
    # No request in flight now.  Once a worker's refresh interval (1 s) has passed since the
    # rollback, its next request re-reads the policy before it is routed: wait at least that
    # (a lower bound, whatever the machine's speed), then every answer must be version 1.
    time.sleep(max(0.0, rolled_back + 1.5 - time.monotonic()))
    for _ in range(6):
        with httpx.Client(timeout=120) as c:  # a new connection each: any worker may answer
            r = post(c)
        assert r.status_code == 200, r.text
        assert versions_used(r.json())[MODEL] == 1, "rollback did not return to version 1"
    metrics = httpx.get(f"{srv.url}/metrics", timeout=60).text
    assert 'liveness_model_requests_total{model="minifasnet_v2",version="2"}' in metrics


def test_canary_is_sticky_per_key_and_shadow_is_recorded_never_returned(rollout_server):
    srv = rollout_server
    assert admin(srv, "POST", f"/models/{MODEL}/canary", {"version": 2, "percent": 50}).status_code == 200
    assert admin(srv, "POST", "/models/minifasnet_v1se/shadow", {"version": 2, "percent": 100}).status_code == 200
    keys = [create_key(srv.db_path, 1000) for _ in range(8)]
    jpeg = T1.read_bytes()
    per_key: dict[str, set[int]] = {}
    with httpx.Client(timeout=60) as c:
        for k in keys:
            for _ in range(3):
                r = c.post(f"{srv.url}/v1/liveness", content=jpeg, headers={"X-API-Key": k, "Content-Type": "image/jpeg"})
                assert r.status_code == 200, r.text
                used = versions_used(r.json())
                per_key.setdefault(k, set()).add(used[MODEL])
                assert used["minifasnet_v1se"] == 1  # shadow never decides
    assert all(len(v) == 1 for v in per_key.values()), per_key  # sticky
    assert {v for s in per_key.values() for v in s} == {1, 2}  # 8 keys at 50%: both versions serve
    deadline = time.monotonic() + 120  # shadow results are recorded after the answers: poll
    while time.monotonic() < deadline:
        report = admin(srv, "GET", "/shadow-report").json()["shadow"]
        if report and report[0]["samples"] >= 24:
            break
        time.sleep(0.2)
    (row,) = report
    assert (row["model"], row["stable"], row["candidate"], row["samples"]) == ("minifasnet_v1se", 1, 2, 24)
    assert 0 <= row["agreement"] <= 1 and row["max_abs_diff"] < 0.5
    cli = run_cli(srv.db_path, "models", "shadow-report")
    assert "minifasnet_v1se: v2 vs v1: 24 samples" in cli.stdout


def test_bad_versions_and_bad_admin_calls_are_refused(rollout_server):
    srv = rollout_server
    before = admin(srv, "GET", "/models").json()
    r = admin(srv, "POST", f"/models/{MODEL}/promote", {"version": 9})
    assert r.status_code == 409 and r.json()["error"]["code"] == "rollout_rejected"
    assert admin(srv, "POST", "/models/nope/promote", {"version": 1}).json()["error"]["code"] == "unknown_model"
    assert admin(srv, "POST", f"/models/{MODEL}/promote", {}).json()["error"]["code"] == "invalid_request"
    assert admin(srv, "GET", "/models", key=None).status_code == 401
    assert admin(srv, "GET", "/models", key="wrong").status_code == 401
    assert admin(srv, "GET", "/models").json() == before


def test_admin_api_is_off_without_a_configured_key(server):
    r = httpx.get(f"{server.url}/v1/admin/models", headers={"X-Admin-Key": "anything"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"


def test_models_cli_lists_and_validates(rollout_server):
    out = run_cli(rollout_server.db_path, "models", "list", "--json")
    rows = {r["model"]: r for r in json.loads(out.stdout)}
    assert 2 in rows[MODEL]["versions"]
    ok = run_cli(rollout_server.db_path, "models", "load", MODEL, "2")
    assert ok.returncode == 0 and "passes" not in ok.stderr and "parity" in ok.stdout
