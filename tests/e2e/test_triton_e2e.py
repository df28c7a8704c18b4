"""The served Bento with ``LIVENESS_BACKEND=triton`` in front of a real tritonserver.

The embedded-backend e2e tests are re-run here against the Triton-backed Bento (their bodies are
called with this module's server, not copied), plus what only Triton has: batching in Triton's
dynamic batcher, a Triton crash and restart under a running Bento, and the HTTP client protocol.

    python -m pytest -m triton tests/e2e/test_triton_e2e.py
"""

from __future__ import annotations

import time

import httpx
import pytest

import test_facia_api as facia_tests
import test_native_api as native_tests
import test_quota_concurrency as quota_tests
from e2e_conftest import REFERENCE_SCORES, SCORE_TOL, b64, key_usage, start_server, triton_env
from liveness.inference.triton_server import TritonServer, triton_venv

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(
        not (triton_venv() / "bin" / "python").exists(),
        reason=f"{triton_venv()} missing: create it with `make triton-venv`",
    ),
]

SCORE_ATOL = 1e-4  # Triton vs embedded, same images


@pytest.fixture(scope="module")
def key(make_key):
    return make_key(1000)


def test_facia_verdicts_and_scores(triton_client, key, t1_jpeg, f1_jpeg, f2_jpeg):
    facia_tests.test_status_check(triton_client)
    facia_tests.test_live_selfie(triton_client, key, t1_jpeg)
    for name in ("F1", "F2"):
        facia_tests.test_spoof_selfies_match_reference(triton_client, key, name, f1_jpeg, f2_jpeg)
    facia_tests.test_truncated_jpeg(triton_client, key, t1_jpeg)


@pytest.mark.parametrize("mode", ["multipart", "json", "raw"])
def test_native_verdicts(triton_client, key, t1_jpeg, f1_jpeg, f2_jpeg, mode):
    native_tests.test_live_t1(triton_client, key, t1_jpeg, mode)
    for name in ("F1", "F2"):
        native_tests.test_spoofs_match_reference(triton_client, key, f1_jpeg, f2_jpeg, mode, name)


def test_native_scores_equal_embedded(client, triton_client, key, t1_jpeg, f1_jpeg, f2_jpeg):
    for name, jpeg in (("T1", t1_jpeg), ("F1", f1_jpeg), ("F2", f2_jpeg)):
        a = native_tests.send(client, "raw", jpeg, key)
        b = native_tests.send(triton_client, "raw", jpeg, key)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        a, b = a.json(), b.json()
        assert abs(a["score"] - b["score"]) <= SCORE_ATOL, (name, a["score"], b["score"])
        for model, p in a["model_scores"].items():
            assert abs(p - b["model_scores"][model]) <= SCORE_ATOL, (name, model, p, b["model_scores"][model])
        assert a["face"].keys() == b["face"].keys()
        assert all(abs(a["face"][k] - b["face"][k]) <= 1e-3 for k in a["face"]), (a["face"], b["face"])
        assert a["models"] == b["models"]  # same names, versions and digests
        assert a["decision"] == b["decision"]


def test_error_codes_and_no_charge(triton_client, make_key, usage, t1_jpeg, bomb_png):
    native_tests.test_error_codes_and_no_charge(triton_client, make_key, usage, t1_jpeg, bomb_png)


@pytest.mark.parametrize("api", ["native", "facia"])
def test_quota_exact_under_concurrency(triton_bento, make_key, usage, t1_jpeg, api):
    quota_tests.test_concurrent_requests_never_overspend(triton_bento, make_key, usage, t1_jpeg, api)


def triton_stats(triton: TritonServer, model: str, version: int = 1) -> tuple[int, int]:
    r = httpx.get(f"http://{triton.http_url}/v2/models/{model}/versions/{version}/stats", timeout=10)
    r.raise_for_status()
    s = r.json()["model_stats"][0]
    return int(s["inference_count"]), int(s["execution_count"])


def test_triton_batches_concurrent_requests(triton_server, triton_bento, make_key, t1_jpeg):
    n = 32
    key = make_key(4 * n)
    seen = []
    for _ in range(3):
        inf0, exe0 = triton_stats(triton_server, "minifasnet_v2")
        responses = quota_tests.burst(triton_bento.url, [quota_tests.raw(key, t1_jpeg) for _ in range(n)])
        assert [r.status_code for r in responses] == [200] * n, [r.text for r in responses if r.status_code != 200]
        inf1, exe1 = triton_stats(triton_server, "minifasnet_v2")
        seen.append((inf1 - inf0, exe1 - exe0))
        assert inf1 - inf0 == n  # one crop per request, one Triton request per crop
        if exe1 - exe0 < inf1 - inf0:
            return
    pytest.fail(f"Triton never batched: (inference_count, execution_count) deltas per burst of {n}: {seen}")


# ----------------------------------------------------------------------------- failure and recovery


def _statuses(url: str, path: str, n: int = 4) -> list[int]:
    """``n`` GETs (two workers answer in turn): all of them, not just the first, must agree."""
    out = []
    for _ in range(n):
        try:
            out.append(httpx.get(url + path, timeout=5).status_code)
        except httpx.HTTPError:
            out.append(0)
    return out


def _wait(cond, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(poll)
    pytest.fail(f"{what} not within {timeout:.0f}s")


def test_triton_crash_gives_503_and_recovers_without_bento_restart(
    triton_repository, db_path, make_key, tmp_path, t1_jpeg
):
    timeout_s = 2.0
    triton = TritonServer(triton_repository, model_control="explicit", log_path=tmp_path / "triton-1.log")
    triton.start(timeout=300)
    bento = None
    try:
        bento = start_server(db_path, tmp_path, triton_env(triton, triton_repository,
                                                           LIVENESS_TRITON_TIMEOUT_S=str(timeout_s)))
        key = make_key(100)
        with httpx.Client(base_url=bento.url, timeout=60) as c:
            ok = native_tests.send(c, "raw", t1_jpeg, key)
        assert ok.status_code == 200, ok.text

        triton.kill()  # SIGKILL, server and Python stubs: a crash, not a shutdown
        for attempt in range(4):  # both workers, both endpoints
            t0 = time.perf_counter()
            r = httpx.post(bento.url + "/v1/liveness", content=t1_jpeg, timeout=30,
                           headers={"X-API-Key": key, "content-type": "image/jpeg"})
            elapsed = time.perf_counter() - t0
            body = native_tests.assert_error(r, 503, "model_unavailable")
            assert int(r.headers["retry-after"]) >= 1, r.headers
            assert body["error"]["details"]["backend"] == "triton"
            assert elapsed < timeout_s + 1.5, elapsed
            f = httpx.post(bento.url + "/liveness", json={"hash_id": key, "selfie_image": b64(t1_jpeg)},
                           timeout=30)
            assert f.status_code == 503 and "retry-after" in f.headers, (f.status_code, f.text, f.headers)
        _wait(lambda: all(s == 503 for s in _statuses(bento.url, "/readyz")), 120, "/readyz 503")
        _wait(lambda: all(s == 503 for s in _statuses(bento.url, "/status_check")), 120, "/status_check 503")
        assert key_usage(key)["used"] == 1  # failures are not charged

        # Same ports, nothing preloaded: the Bento re-loads its versions by itself.
        triton = TritonServer(triton_repository, triton.http_port, triton.grpc_port, triton.metrics_port,
                              model_control="explicit", log_path=tmp_path / "triton-2.log")
        t_restart = time.perf_counter()
        triton.start(timeout=300)
        # Each worker recovers on its own probe; which worker answers a GET is the kernel's choice,
        # so wait until both probes agree on several calls in a row.
        _wait(
            lambda: all(s == 200 for p in ("/readyz", "/status_check") for s in _statuses(bento.url, p, 6)),
            180, "/readyz and /status_check 200 after restart",
        )
        for _ in range(4):
            r = httpx.post(bento.url + "/v1/liveness", content=t1_jpeg, timeout=30,
                           headers={"X-API-Key": key, "content-type": "image/jpeg"})
            assert r.status_code == 200, r.text
            assert r.json()["decision"] == "live"
        print(f"\nrecovered {time.perf_counter() - t_restart:.1f}s after tritonserver restart "
              f"(start {triton.startup_seconds:.1f}s)")
        assert bento.proc.poll() is None
    finally:
        if bento is not None:
            bento.stop()
        triton.stop()


# ----------------------------------------------------------------------------- http protocol


def test_http_protocol_smoke(triton_server, triton_repository, db_path, make_key, tmp_path, t1_jpeg, f1_jpeg):
    bento = start_server(db_path, tmp_path, triton_env(triton_server, triton_repository, protocol="http",
                                                       LIVENESS_WORKERS="1"))
    try:
        key = make_key(10)
        with httpx.Client(base_url=bento.url, timeout=60) as c:
            r = native_tests.send(c, "raw", t1_jpeg, key)
            assert r.status_code == 200, r.text
            native_tests.assert_verdict(r.json(), live=True)
            r = native_tests.send(c, "raw", f1_jpeg, key)
            assert r.status_code == 200, r.text
            assert abs(r.json()["score"] - REFERENCE_SCORES["F1"]) <= SCORE_TOL
    finally:
        bento.stop()
