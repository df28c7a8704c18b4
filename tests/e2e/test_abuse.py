"""The abuse suite: each attack the abuse review ran against a served Bento, again, with the fix
asserted.  Loopback only, bounded loops, no speed assertions.  The crash and slow-client cases
have modules of their own (test_crash_charges, test_lifecycle, test_slow_clients); the
schema checks are test_openapi's.

Measured before the fixes (the issue): a key with limit 1 scored 80 frames on 10 sessions for
free and one key opened 990 sessions, filling the pool for everyone; ~1,000 levels of JSON
nesting answered 500 on seven routes; a 6000x6000 16-bit RGBA PNG cost ~700 MB of RSS for good;
a deleted session's selfie was still in the SQLite -wal; an empty raw body was 415; a wrong
method 400; /stats showed every tenant to anyone.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import struct
import threading
import zlib
from pathlib import Path

import httpx
import psutil
import pytest

from e2e_conftest import T1, create_key, key_usage, start_server
from edge import facia

FRAME = base64.b64encode(T1.read_bytes()).decode()
DEEP = ('{"x":' + "[" * 1000 + "]" * 1000 + "}").encode()
JSON_ROUTES = ("/liveness", "/v1/liveness", "/start", "/process", "/complete", "/v1/sessions", "/v1/verify")


@pytest.fixture(scope="module")
def bento(tmp_path_factory):
    d = tmp_path_factory.mktemp("abuse")
    db = d / "keys.sqlite3"
    env = {"LIVENESS_WORKERS": "1", "LIVENESS_CHALLENGE_MAX_FRAMES": "5", "LIVENESS_CHALLENGE_MAX_FPS": "1000",
           "LIVENESS_CHALLENGE_MAX_SESSIONS_PER_KEY": "3", "LIVENESS_DECODE_MEMORY_MB": "700"}
    server = start_server(db, d, env)
    yield server, db
    server.stop()


def post(url: str, path: str, key: str | None, doc=None, content: bytes | None = None, **headers: str) -> httpx.Response:
    h = {"X-API-Key": key} if key else {}
    if content is None:
        content, h["Content-Type"] = json.dumps(doc).encode(), "application/json"
    return httpx.post(url + path, content=content, headers={**h, **headers}, timeout=120)


def test_challenge_frames_are_paid_for_and_one_key_cannot_fill_the_pool(bento):
    server, db = bento
    key = create_key(db, 1)
    sid = post(server.url, "/start", key, {}).json()["session_id"]
    scored = 0
    for _ in range(20):  # the client kept sending frames
        r = post(server.url, "/process", key, {"session_id": sid, "image": FRAME})
        if r.status_code != 200:
            assert (r.status_code, r.json()["error"]["code"]) == (409, "session_finished"), r.text
            break
        scored += 1
    assert scored == 5  # LIVENESS_CHALLENGE_MAX_FRAMES: what the one unit bought
    r = post(server.url, "/start", key, {})  # a second session needs a second unit
    assert (r.status_code, r.json()["error"]["code"]) == (429, "quota_exceeded")
    assert key_usage(key)["used"] == 1

    greedy, other = create_key(db, 1000), create_key(db, 10)
    codes = [post(server.url, "/start", greedy, {}).status_code for _ in range(10)]
    assert codes[:3] == [200] * 3 and set(codes[3:]) == {429}  # 3 live per key here, then key_session_limit
    assert post(server.url, "/start", other, {}).status_code == 200  # everyone else still gets in
    assert key_usage(greedy)["used"] == 3  # refusals are not charged


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_deep_json_is_invalid_request_on_every_json_route(bento, path):
    server, db = bento
    key = create_key(db, 10)
    r = post(server.url, path, key, content=DEEP, **{"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    body = r.json()
    if path == "/liveness":  # FACIA's own shape for a request it cannot read
        assert body == facia.CORRUPT
    else:
        assert body["error"]["code"] == "invalid_request" and body["error"]["details"] == {"max_depth": 32}
    assert key_usage(key)["used"] == 0


def rgba16_png(side: int) -> bytes:
    row = b"\x00" + struct.pack(">HHHH", 0, 0, 0, 0xFFFF) * side
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(t: bytes, b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def worker_rss(server) -> int:
    (worker,) = [p for p in psutil.Process(server.proc.pid).children(recursive=True)
                 if "_bentoml_impl.worker" in " ".join(p.cmdline())]
    return worker.memory_info().rss


def test_a_burst_of_16_bit_rgba_bombs_is_answered_and_rss_comes_back(bento):
    """8 at once of the issue's 6000x6000 16-bit RGBA PNG (~430 KB, 576 MB to decode each): the
    700 MB pool decodes them one at a time; none is a 500; the worker's RSS ends within 200 MB of
    where it was after the same burst before (it used to keep ~700 MB per image, 2.4 GB for 8)."""
    server, db = bento
    key = create_key(db, 100)
    png = rgba16_png(6000)
    # The same burst first, so what stays for good - ONNX Runtime's arenas for the fallback
    # detector passes a black 36 Mpx image takes, at whatever concurrency the burst reached - is
    # in the baseline (a warm-up pair did not always overlap on a loaded machine); the second burst
    # must then add nothing that stays.  A leak (the issue: ~700 MB kept per image) adds per burst.
    def burst() -> list[int]:
        statuses: list[int] = []

        def one() -> None:
            statuses.append(post(server.url, "/v1/liveness", key, content=png, **{"Content-Type": "image/png"}).status_code)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return statuses

    burst()
    before = worker_rss(server)
    statuses = burst()
    assert len(statuses) == 8 and all(s in (200, 422, 503) for s in statuses), statuses  # never a 500
    assert worker_rss(server) - before < 200 * 2**20


def test_a_deleted_sessions_selfie_is_gone_from_the_db_and_its_wal(bento):
    server, db = bento
    key = create_key(db, 10)
    r = post(server.url, "/v1/sessions", key, {"mode": "passive", "enable_session_image": True})
    assert r.status_code == 200, r.text
    sid, token = r.json()["session_id"], r.json()["auth_token"]
    marker = os.urandom(16).hex().encode()
    selfie = T1.read_bytes() + b"\xff\xfe" + marker  # a trailer after EOI: still the same JPEG
    r = httpx.post(server.url + "/v1/liveness", content=selfie, timeout=120,
                   headers={"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    files = [Path(db), Path(str(db) + "-wal")]
    assert marker in b"".join(p.read_bytes() for p in files if p.exists())  # stored, as asked
    assert httpx.delete(f"{server.url}/v1/sessions/{sid}", headers={"X-API-Key": key}).status_code == 204
    assert marker not in b"".join(p.read_bytes() for p in files if p.exists())  # at once, not in 60 s
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM documents WHERE id = ? OR owner = ?", (sid, sid)).fetchone() == (0,)


def test_empty_bodies_wrong_methods_and_stats(bento):
    server, db = bento
    key = create_key(db, 10)
    r = post(server.url, "/v1/liveness", key, content=b"", **{"Content-Type": "image/jpeg"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "empty_image")
    r = post(server.url, "/v1/video-liveness", key, content=b"", **{"Content-Type": "video/mp4"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "empty_video")
    for method, path in (("GET", "/v1/liveness"), ("PUT", "/liveness"), ("DELETE", "/start")):
        r = httpx.request(method, server.url + path, headers={"X-API-Key": key})
        assert r.status_code == 405 and "POST" in r.headers["allow"], (method, path, r.text)
    r = httpx.get(server.url + "/stats")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "missing_api_key")
    mine = httpx.get(server.url + "/stats", headers={"X-API-Key": key}).json()
    assert mine["active_sessions"] == 0  # only this key's sessions, none yet
    assert key_usage(key)["used"] == 0
