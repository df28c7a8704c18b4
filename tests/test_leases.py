"""Reservations are leases: a unit reserved by a process that dies before commit or refund is
given back once its lease expires - not lost, not charged twice.  SQLite (a real file, and a
real process killed with SIGKILL mid-request) and MongoDB (mongomock); time is injected."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mongomock
import pytest

from liveness.keys import SqliteKeyStore
from liveness.keys.mongo_store import MongoKeyStore

REPO = Path(__file__).resolve().parents[1]
START = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "mongo"])
def stores(request, tmp_path):
    """``open_store()`` -> a store on the same data (another worker, or the same one restarted)."""
    clock, client = Clock(), mongomock.MongoClient()

    def open_store():
        if request.param == "sqlite":
            return SqliteKeyStore(tmp_path / "keys.sqlite3", clock=clock, lease_s=60)
        return MongoKeyStore(client, clock=clock, lease_s=60)

    return clock, open_store


def test_an_unsettled_unit_comes_back_only_after_its_lease(stores):
    clock, open_store = stores
    store = open_store()
    raw = store.create("k", 10).raw_key
    store.commit(store.reserve(raw))
    store.reserve(raw)  # the process dies here: never committed, never refunded
    store.reserve(raw)
    clock.advance(59)
    assert store.reclaim_expired() == 0 and store.usage("k").used == 3  # a slow request keeps its unit
    clock.advance(2)
    again = open_store()  # a restarted worker sweeps at start-up
    assert again.reclaim_expired() == 2
    assert store.reclaim_expired() == 0  # once, whoever sweeps
    u = again.usage("k")
    assert (u.used, u.succeeded, u.reclaimed, u.refunded) == (1, 1, 2, 0)


def test_settling_after_the_sweep_neither_refunds_twice_nor_serves_free(stores):
    clock, open_store = stores
    store = open_store()
    raw = store.create("k", 10).raw_key
    late_ok, late_fail = store.reserve(raw), store.reserve(raw)
    clock.advance(61)
    assert store.reclaim_expired() == 2
    store.refund(late_fail)  # already given back by the sweep: nothing more
    store.commit(late_ok)  # the answer did go out after all: charged again
    u = store.usage("k")
    assert (u.used, u.succeeded, u.reclaimed) == (1, 1, 1)


def test_a_settled_unit_is_never_reclaimed(stores):
    clock, open_store = stores
    store = open_store()
    raw = store.create("k", 10).raw_key
    store.commit(store.reserve(raw))
    store.refund(store.reserve(raw))
    clock.advance(3600)
    assert store.reclaim_expired() == 0
    u = store.usage("k")
    assert (u.used, u.succeeded, u.refunded, u.reclaimed) == (1, 1, 1, 0)


def test_a_process_killed_mid_request_leaves_nothing_charged_once_swept(tmp_path):
    """A real worker process: it reserves 5 units, commits 2 and is SIGKILLed holding 3."""
    db = tmp_path / "keys.sqlite3"
    store = SqliteKeyStore(db, lease_s=60)
    raw = store.create("k", 100).raw_key
    script = textwrap.dedent(f"""
        import os, signal
        from liveness.keys import SqliteKeyStore
        s = SqliteKeyStore({str(db)!r}, lease_s=60)
        held = [s.reserve({raw!r}) for _ in range(5)]
        s.commit(held[0]); s.commit(held[1])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    assert store.usage("k").used == 5  # three units charged for answers nobody got
    clock = Clock()
    clock.now = datetime.now(timezone.utc) + timedelta(seconds=61)
    after = SqliteKeyStore(db, clock=clock, lease_s=60)
    assert after.reclaim_expired() == 3
    u = after.usage("k")
    assert (u.used, u.succeeded, u.reclaimed) == (2, 2, 3)


def test_a_version_1_file_gains_leases_and_keeps_its_counts(tmp_path):
    db = tmp_path / "keys.sqlite3"
    with sqlite3.connect(db) as conn:  # the v1 layout, as written before leases
        conn.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL, prefix TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE, quota_limit INTEGER NOT NULL CHECK (quota_limit >= 0),
                period TEXT NOT NULL CHECK (period IN ('day', 'month', 'total')), created_at TEXT NOT NULL,
                revoked_at TEXT);
            CREATE INDEX api_keys_name ON api_keys (name);
            CREATE TABLE usage (key_id TEXT NOT NULL REFERENCES api_keys (key_id), bucket TEXT NOT NULL,
                used INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0), succeeded INTEGER NOT NULL DEFAULT 0,
                refunded INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (key_id, bucket));
        """)
    store = SqliteKeyStore(db)
    raw = store.create("k", 10, "total").raw_key
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO usage (key_id, bucket, used, succeeded, refunded) "
                     "SELECT key_id, 'total', 4, 4, 1 FROM api_keys")
    store.commit(store.reserve(raw))
    u = store.usage("k")
    assert (u.used, u.succeeded, u.refunded, u.reclaimed) == (5, 5, 1, 0)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)


def test_each_worker_sweeps_in_the_background_when_due(tmp_path):
    from liveness.admission import Admission, FixedRouting
    from liveness.rollout.router import Resolved, Router
    from tests.fakes import FakeClock

    clock, swept = Clock(), []
    store = SqliteKeyStore(tmp_path / "keys.sqlite3", clock=clock, lease_s=60)
    raw = store.create("k", 10).raw_key
    store.reserve(raw)  # a unit of a worker that died
    store.reclaim_expired = lambda real=store.reclaim_expired: swept.append(real()) or swept[-1]  # type: ignore[method-assign]
    monotonic = FakeClock(0.0)
    admission = Admission(store, FixedRouting(Router({"m": Resolved(1)})), clock=monotonic, sweep_every_s=30)

    async def request():
        async with admission.admit(raw) as ctx:
            await ctx.input_valid()
        await asyncio.gather(*admission._background)

    asyncio.run(request())
    assert swept == []  # not due yet
    monotonic.advance(31)
    clock.advance(61)
    asyncio.run(request())
    assert swept == [1]  # the dead worker's unit; the two requests' own were committed
    u = store.usage("k")
    assert (u.used, u.succeeded, u.reclaimed) == (2, 2, 1)
