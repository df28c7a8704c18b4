"""Quota usage lives in the key store, not in the server process: it survives a restart."""

from __future__ import annotations

import httpx
import pytest

from e2e_conftest import create_key, key_usage

pytestmark = pytest.mark.e2e


def check(url: str, key: str, jpeg: bytes) -> httpx.Response:
    return httpx.post(url + "/v1/liveness", content=jpeg, timeout=60,
                      headers={"X-API-Key": key, "content-type": "image/jpeg"})


def test_usage_survives_restart(server_factory, tmp_path, t1_jpeg):
    db = tmp_path / "restart" / "keys.sqlite3"
    db.parent.mkdir()
    key = create_key(db, 5, "total")

    first = server_factory(db)
    for _ in range(3):
        r = check(first.url, key, t1_jpeg)
        assert r.status_code == 200, r.text
    first.stop()
    assert first.proc.poll() is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(first.url + "/readyz", timeout=2)
    assert key_usage(key)["used"] == 3

    second = server_factory(db)
    assert second.port != first.port or second.proc.pid != first.proc.pid
    u = key_usage(key)
    assert (u["used"], u["remaining"]) == (3, 2), u
    for _ in range(2):
        r = check(second.url, key, t1_jpeg)
        assert r.status_code == 200, r.text
    r = check(second.url, key, t1_jpeg)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "quota_exceeded"
    u = key_usage(key)
    assert (u["used"], u["remaining"]) == (5, 0), u
