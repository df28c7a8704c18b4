"""KeyStore contract tests, run against SQLite (a tmp file) and MongoDB (mongomock)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mongomock
import pytest

from liveness.errors import INVALID_API_KEY, MISSING_API_KEY, QUOTA_EXCEEDED, LivenessError
from liveness.keys import (
    KeyLookupError,
    KeyStore,
    SqliteKeyStore,
    bucket_for,
    hash_key,
    open_key_store,
)
from liveness.keys.mongo_store import MongoKeyStore

START = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture(params=["sqlite", "mongo"])
def backend(request):
    return request.param


@pytest.fixture
def make_store(backend, tmp_path, closed_after):
    """``make_store(clock=None, threaded=False)``; repeated calls share the same backing data.
    Every store made is closed after the test."""
    mongo_client = mongomock.MongoClient()

    def make(clock=None, threaded: bool = False) -> KeyStore:
        if backend == "sqlite":
            return closed_after(SqliteKeyStore(tmp_path / "db" / "keys.sqlite3", clock=clock))
        # mongomock is not thread-safe (find_one_and_update = find + separate update), so
        # the threaded test serialises it in-process; real MongoDB is atomic server-side.
        return closed_after(MongoKeyStore(mongo_client, clock=clock, serialize=threaded))

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(make_store, clock) -> KeyStore:
    return make_store(clock)


def _kind(excinfo: pytest.ExceptionInfo) -> object:
    return excinfo.value.kind


# ----------------------------------------------------------------------------- issue / authenticate


def test_create_and_authenticate(store):
    issued = store.create("acme", 10, "month")
    raw, info = issued.raw_key, issued.info
    assert raw.startswith("lk_") and len(raw) == 3 + 43
    assert info.prefix == raw[:8]
    assert (info.name, info.limit, info.period, info.revoked) == ("acme", 10, "month", False)
    assert info.created_at == START
    assert raw not in repr(issued)  # the secret never lands in logs via repr

    assert store.authenticate(raw) == info
    assert store.list_keys() == [info]

    with pytest.raises(LivenessError) as exc:
        store.authenticate("lk_" + "x" * 43)
    assert _kind(exc) is INVALID_API_KEY
    for missing in ("", None):
        with pytest.raises(LivenessError) as exc:
            store.authenticate(missing)
        assert _kind(exc) is MISSING_API_KEY
        with pytest.raises(LivenessError) as exc:
            store.reserve(missing)
        assert _kind(exc) is MISSING_API_KEY


def test_two_keys_are_distinct(store):
    a, b = store.create("a", 1), store.create("b", 1)
    assert a.raw_key != b.raw_key and a.info.key_id != b.info.key_id
    assert store.authenticate(b.raw_key).name == "b"


@pytest.mark.parametrize(
    "name, limit, period",
    [("", 1, "day"), ("  ", 1, "day"), ("x", -1, "day"), ("x", True, "day"), ("x", 1.5, "day"),
     ("x", 1, "week")],
)
def test_create_validation(store, name, limit, period):
    with pytest.raises(ValueError):
        store.create(name, limit, period)


def test_only_the_hash_is_stored(store, backend, tmp_path):
    issued = store.create("acme", 5, "day")
    store.commit(store.reserve(issued.raw_key))
    if backend == "sqlite":
        store.close()
        blob = b"".join(p.read_bytes() for p in (tmp_path / "db").iterdir() if p.is_file())
        assert issued.raw_key.encode() not in blob
        assert issued.raw_key[8:].encode() not in blob  # not even the non-prefix part
        with sqlite3.connect(tmp_path / "db" / "keys.sqlite3") as conn:
            stored = conn.execute("SELECT key_hash, prefix FROM api_keys").fetchall()
        assert stored == [(hash_key(issued.raw_key), issued.raw_key[:8])]
    else:
        dump = repr([list(store.db[name].find()) for name in store.db.list_collection_names()])
        assert issued.raw_key not in dump and issued.raw_key[8:] not in dump
        assert store.keys.find_one()["key_hash"] == hash_key(issued.raw_key)


# ----------------------------------------------------------------------------- revoke / lookup


def test_revoke(store, clock):
    keep = store.create("keep", 5)
    issued = store.create("gone", 5)
    reservation = store.reserve(issued.raw_key)

    clock.advance(minutes=5)
    revoked = store.revoke("gone")  # by name
    assert revoked.key_id == issued.info.key_id and revoked.revoked
    assert revoked.revoked_at == store.get(issued.info.key_id).revoked_at
    for call in (store.authenticate, store.reserve):
        with pytest.raises(LivenessError) as exc:
            call(issued.raw_key)
        assert _kind(exc) is INVALID_API_KEY

    clock.advance(minutes=5)
    assert store.revoke(issued.info.key_id).revoked_at == revoked.revoked_at  # idempotent
    store.refund(reservation)  # in-flight requests can still settle after a revoke
    assert store.usage("gone").used == 0
    assert store.authenticate(keep.raw_key).name == "keep"
    assert {k.name: k.revoked for k in store.list_keys()} == {"keep": False, "gone": True}


def test_lookup_by_id_or_name(store):
    a1 = store.create("dup", 5)
    a2 = store.create("dup", 7)
    with pytest.raises(KeyLookupError, match="ambiguous"):
        store.usage("dup")
    assert store.usage(a2.info.key_id).limit == 7
    store.revoke(a1.info.key_id)
    assert store.get("dup").key_id == a2.info.key_id  # the only active one wins
    store.revoke("dup")
    assert store.get("dup").key_id in {a1.info.key_id, a2.info.key_id}  # all revoked: still found
    with pytest.raises(KeyLookupError):
        store.revoke("nope")
    with pytest.raises(KeyLookupError):
        store.usage("nope")


# ----------------------------------------------------------------------------- quota arithmetic


def test_reserve_commit_refund(store):
    issued = store.create("acme", 5, "month")
    r1 = store.reserve(issued.raw_key)
    assert (r1.key_id, r1.period, r1.bucket, r1.used, r1.limit, r1.remaining) == (
        issued.info.key_id, "month", "2026-11", 1, 5, 4)
    store.commit(r1)
    r2 = store.reserve(issued.raw_key)
    assert r2.used == 2
    store.refund(r2)
    u = store.usage("acme")
    assert (u.period, u.bucket, u.used, u.limit, u.remaining, u.succeeded, u.refunded) == (
        "month", "2026-11", 1, 5, 4, 1, 1)
    assert store.authenticate(issued.raw_key)  # authenticate never charges
    assert store.usage(issued.info.key_id).used == 1


def test_limit_reached_and_refund_restores_capacity(store):
    raw = store.create("acme", 3, "total").raw_key
    reservations = [store.reserve(raw) for _ in range(3)]
    assert [r.used for r in reservations] == [1, 2, 3]
    with pytest.raises(LivenessError) as exc:
        store.reserve(raw)
    assert _kind(exc) is QUOTA_EXCEEDED and exc.value.status == 429
    assert exc.value.details == {"limit": 3, "period": "total", "bucket": "total"}
    u = store.usage("acme")
    assert (u.used, u.remaining) == (3, 0)  # the rejected attempt is not counted

    store.refund(reservations[0])
    assert store.usage("acme").remaining == 1
    store.reserve(raw)
    with pytest.raises(LivenessError):
        store.reserve(raw)


def test_zero_limit_and_refund_floor(store):
    with pytest.raises(LivenessError) as exc:
        store.reserve(store.create("none", 0, "day").raw_key)
    assert _kind(exc) is QUOTA_EXCEEDED

    r = store.reserve(store.create("one", 1, "day").raw_key)
    store.refund(r)
    store.refund(r)  # a double refund gives nothing back twice: the lease is already ended
    u = store.usage("one")
    assert (u.used, u.refunded) == (0, 1)


def test_day_rollover(store, clock):
    clock.now = datetime(2026, 11, 24, 23, 59, 30, tzinfo=timezone.utc)
    raw = store.create("daily", 2, "day").raw_key
    first = store.reserve(raw)
    store.reserve(raw)
    with pytest.raises(LivenessError) as exc:
        store.reserve(raw)
    assert exc.value.details["resets_at"] == "2026-11-25T00:00:00+00:00"

    clock.advance(seconds=31)  # 2026-11-25 00:00:01
    today = store.reserve(raw)
    assert (today.bucket, today.used) == ("2026-11-25", 1)
    store.refund(first)  # goes back to yesterday's bucket, not today's
    u = store.usage("daily")
    assert (u.bucket, u.used, u.refunded) == ("2026-11-25", 1, 0)
    clock.now = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)
    u = store.usage("daily")
    assert (u.bucket, u.used, u.refunded) == ("2026-11-24", 1, 1)


def test_month_and_total_rollover(store, clock):
    clock.now = datetime(2026, 11, 30, 23, 0, tzinfo=timezone.utc)
    monthly = store.create("monthly", 1, "month").raw_key
    lifetime = store.create("lifetime", 1, "total").raw_key
    store.reserve(monthly)
    store.reserve(lifetime)
    clock.now = datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc)
    assert store.reserve(monthly).bucket == "2026-12"
    with pytest.raises(LivenessError) as exc:
        store.reserve(lifetime)  # "total" never rolls over
    assert _kind(exc) is QUOTA_EXCEEDED and "resets_at" not in exc.value.details
    clock.now = datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert store.usage("monthly").bucket == "2027-01" and store.usage("monthly").used == 0


def test_bucket_for():
    moment = datetime(2026, 11, 24, 23, 30, tzinfo=timezone.utc)
    assert bucket_for("day", moment) == "2026-11-24"
    assert bucket_for("month", moment) == "2026-11"
    assert bucket_for("total", moment) == "total"
    # buckets are UTC whatever the clock's zone is
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert bucket_for("day", plus_two) == "2026-11-24"
    with pytest.raises(ValueError):
        bucket_for("day", datetime(2026, 11, 24))  # naive
    with pytest.raises(ValueError):
        bucket_for("week", moment)


# ----------------------------------------------------------------------------- concurrency


def test_threads_never_overspend(make_store):
    store = make_store(threaded=True)
    raw = store.create("busy", 10, "day").raw_key
    barrier = threading.Barrier(50)

    def attempt(_: int) -> bool:
        barrier.wait()
        try:
            store.reserve(raw)
            return True
        except LivenessError as exc:
            assert exc.kind is QUOTA_EXCEEDED
            return False

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(attempt, range(50)))
    assert results.count(True) == 10
    assert store.usage("busy").used == 10


def _reserve_in_process(db_path: str, raw_key: str, attempts: int, barrier, results) -> None:
    store = SqliteKeyStore(db_path)
    barrier.wait()
    ok = 0
    for _ in range(attempts):
        try:
            store.reserve(raw_key)
            ok += 1
        except LivenessError as exc:
            if exc.kind is not QUOTA_EXCEEDED:
                raise
    store.close()
    results.put(ok)


def test_sqlite_processes_never_overspend(tmp_path):
    db_path = str(tmp_path / "shared.sqlite3")
    store = SqliteKeyStore(db_path)
    raw = store.create("shared", 25, "day").raw_key

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_reserve_in_process, args=(db_path, raw, 20, barrier, results))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    counts = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(counts) == 25
    assert store.usage("shared").used == 25
    store.close()


# ----------------------------------------------------------------------------- sqlite specifics


def test_sqlite_persistence(tmp_path, clock):
    path = tmp_path / "nested" / "dir" / "keys.sqlite3"
    first = SqliteKeyStore(path, clock=clock)
    raw = first.create("acme", 10, "month").raw_key
    r = [first.reserve(raw) for _ in range(3)]
    first.commit(r[0])
    first.commit(r[1])
    first.refund(r[2])
    first.close()

    again = SqliteKeyStore(path, clock=clock)
    u = again.usage("acme")
    assert (u.used, u.succeeded, u.refunded, u.remaining) == (2, 2, 1, 8)
    assert again.authenticate(raw).name == "acme"
    again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)


def test_sqlite_refuses_newer_schema(tmp_path):
    path = tmp_path / "keys.sqlite3"
    SqliteKeyStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="v99"):
        SqliteKeyStore(path)


# ----------------------------------------------------------------------------- factory / hygiene


def test_open_key_store(tmp_path, monkeypatch):
    sqlite_store = open_key_store(str(tmp_path / "a" / "k.sqlite3"), None)
    assert isinstance(sqlite_store, SqliteKeyStore) and (tmp_path / "a" / "k.sqlite3").exists()
    sqlite_store.close()
    assert isinstance(open_key_store(str(tmp_path / "b.sqlite3"), ""), SqliteKeyStore)

    seen = {}

    def fake_client(uri, **kwargs):
        seen["uri"] = uri
        return mongomock.MongoClient()

    monkeypatch.setattr("liveness.keys.mongo_store.MongoClient", fake_client)
    mongo_store = open_key_store(str(tmp_path / "unused.sqlite3"), "mongodb://db.example:27017")
    assert isinstance(mongo_store, MongoKeyStore) and seen["uri"] == "mongodb://db.example:27017"
    assert mongo_store.db.name == "liveness"
    assert not (tmp_path / "unused.sqlite3").exists()


def test_mongo_indexes():
    store = MongoKeyStore(mongomock.MongoClient(), db_name="t")
    assert store.keys.index_information()["key_hash_unique"]["unique"]
    assert store.usage_docs.index_information()["key_bucket_unique"]["unique"]


def test_keys_package_has_no_bentoml():
    package = Path(__file__).resolve().parents[1] / "liveness" / "keys"
    for source in package.glob("*.py"):
        assert "bentoml" not in source.read_text().lower(), source


def test_check_gates_without_charging(store):
    issued = store.create("gate", 1, "total")
    for _ in range(3):
        assert store.check(issued.raw_key).key_id == issued.info.key_id
    assert store.usage(issued.info.key_id).used == 0
    store.commit(store.reserve(issued.raw_key))
    with pytest.raises(LivenessError) as e:
        store.check(issued.raw_key)
    assert _kind(e) is QUOTA_EXCEEDED
    with pytest.raises(LivenessError) as e:
        store.check("lk_not-a-key")
    assert _kind(e) is INVALID_API_KEY


# ----------------------------------------------------------------------------- by key_id (tokens)


def test_by_id_checks_and_charges_like_the_raw_key(store, clock):
    issued = store.create("by-id", 2, "day")
    key_id = issued.info.key_id
    assert store.authenticate_id(key_id) == issued.info
    assert store.check_id(key_id) == issued.info
    assert store.usage(key_id).used == 0  # check_id never charges
    r1 = store.reserve_id(key_id)
    store.commit(r1)
    assert (r1.key_id, r1.bucket, r1.used, r1.limit) == (key_id, bucket_for("day", START), 1, 2)
    store.reserve(issued.raw_key)  # the raw key and the id share one counter
    for attempt in (store.check_id, store.reserve_id):
        with pytest.raises(LivenessError) as e:
            attempt(key_id)
        assert _kind(e) is QUOTA_EXCEEDED
    clock.advance(days=1)
    store.refund(store.reserve_id(key_id))  # a new bucket; refund/commit are unchanged
    assert store.usage(key_id).used == 0 and store.usage(key_id).refunded == 1


def test_by_id_refuses_unknown_names_and_revoked_keys(store):
    issued = store.create("named", 5)
    for bad in ("", "named", "nope", issued.raw_key):  # an exact key_id only, never a name
        for attempt in (store.authenticate_id, store.check_id, store.reserve_id):
            with pytest.raises(LivenessError) as e:
                attempt(bad)
            assert _kind(e) is INVALID_API_KEY
    store.revoke(issued.info.key_id)
    for attempt in (store.authenticate_id, store.check_id, store.reserve_id):
        with pytest.raises(LivenessError) as e:
            attempt(issued.info.key_id)
        assert _kind(e) is INVALID_API_KEY
    assert store.usage(issued.info.key_id).used == 0


def test_credentials_dispatch_on_principal(store):
    from liveness.keys import Principal

    issued = store.create("cred", 3)
    assert store.check_credential(issued.raw_key) == store.check_credential(Principal(issued.info.key_id))
    store.reserve_credential(issued.raw_key)
    store.reserve_credential(Principal(issued.info.key_id))
    assert store.usage(issued.info.key_id).used == 2
    with pytest.raises(LivenessError) as e:
        store.check_credential(None)
    assert _kind(e) is MISSING_API_KEY


def test_token_secret_is_made_once_and_shared(make_store):
    first, second = make_store(), make_store()
    secret = first.token_secret()
    assert isinstance(secret, bytes) and len(secret) >= 32
    assert first.token_secret() == secret == second.token_secret()
    assert b"lk_" not in secret


def test_token_secret_differs_between_stores(tmp_path):
    a = SqliteKeyStore(tmp_path / "a.sqlite3")
    b = MongoKeyStore(mongomock.MongoClient())
    try:
        assert a.token_secret() != b.token_secret()
    finally:
        a.close()
        b.close()
