"""The versioned-document store on both backends (a SQLite file, mongomock), and the move of data
written by the stores before it (old SQLite tables, old-shape MongoDB documents) into it."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import mongomock
import pytest
from bson import ObjectId

from liveness.challenges import steps as S
from liveness.challenges import store as challenges
from liveness.sessions import store as sessions
from liveness.sessions.model import SessionParams, SessionRecord
from liveness.storage.documents import (
    Cap,
    Document,
    DocumentExists,
    Group,
    Match,
    MongoDocuments,
    SqliteDocuments,
)

LIVE = ("live",)


def _doc(doc_id: str, owner: str = "k1", created: float = 0.0, expires: float = 100.0, status: str = "live",
         kind: str = "thing", blob: bytes | None = None, outcome: str | None = None) -> Document:
    return Document(kind=kind, id=doc_id, owner=owner, created_at=created, expires_at=expires, status=status,
                    outcome=outcome, body={"n": doc_id, "nested": {"list": [1, 2.5, None]}}, blob=blob)


@pytest.fixture
def docs(store_of):
    return store_of(SqliteDocuments, MongoDocuments)


# ----------------------------------------------------------------------------- operations


def test_insert_get_and_compare_and_set(docs):
    first = _doc("a", blob=b"\x00bytes")
    assert docs.insert(first)
    assert docs.get("thing", "a") == first
    assert docs.get("other", "a") is None  # kinds are apart
    with pytest.raises(DocumentExists):
        docs.insert(_doc("a"))
    changed = Document(**{**first.__dict__, "status": "done", "outcome": "passed", "body": {"x": 1}, "blob": None})
    assert docs.update(changed)
    assert not docs.update(changed)  # the stored version moved on: the stale writer loses
    got = docs.get("thing", "a")
    assert (got.version, got.status, got.outcome, got.body, got.blob) == (1, "done", "passed", {"x": 1}, None)
    assert not docs.update(_doc("missing"))


def test_upsert_replaces_whole_document(docs):
    docs.upsert(_doc("a", blob=b"one"))
    docs.upsert(_doc("a", owner="k2", expires=5.0, blob=b"two"))
    got = docs.get("thing", "a")
    assert (got.owner, got.expires_at, got.blob) == ("k2", 5.0, b"two")


def test_capped_insert_counts_unexpired_documents_in_the_statuses(docs):
    assert docs.insert(_doc("a"), Cap(2, LIVE, now=0.0))
    assert docs.insert(_doc("b", owner="k2"), Cap(2, LIVE, now=0.0))
    docs.insert(_doc("done", status="done"))  # another status does not count
    docs.insert(_doc("old", expires=0.0))  # nor does one expired at ``now``
    assert not docs.insert(_doc("c", owner="k3"), Cap(2, LIVE, now=0.0))
    assert docs.get("thing", "c") is None
    assert docs.insert(_doc("c", owner="k3"), Cap(2, LIVE, now=100.0))  # a and b expired by then


def test_capped_insert_per_owner(docs):
    assert docs.insert(_doc("a", owner="k1"), Cap(1, LIVE, now=0.0, per_owner=True))
    assert not docs.insert(_doc("b", owner="k1"), Cap(1, LIVE, now=0.0, per_owner=True))
    assert docs.insert(_doc("c", owner="k2"), Cap(1, LIVE, now=0.0, per_owner=True))
    assert docs.count("thing", Match(statuses=LIVE, live_at=0.0)) == 2


def test_capped_insert_is_exact_under_concurrency_on_sqlite(tmp_path):
    path = tmp_path / "db.sqlite3"
    SqliteDocuments(path).close()
    stores = [SqliteDocuments(path) for _ in range(10)]  # one connection each, as ten workers
    start, won = threading.Barrier(10), []

    def attempt(i: int) -> None:
        start.wait()
        if stores[i].insert(_doc(f"s{i}"), Cap(3, LIVE, now=0.0)):
            won.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 3 and stores[0].count("thing", Match()) == 3
    for s in stores:
        s.close()


def test_purge_and_blob_clearing(docs):
    for i, expires in enumerate((50.0, 100.0, 200.0)):
        docs.insert(_doc(f"d{i}", expires=expires, blob=b"emb"))
    docs.insert(_doc("other-kind", kind="other", expires=0.0, blob=b"emb"))
    assert docs.clear_blobs("thing", now=100.0) == 2  # expired at 100: d0 and d1
    assert [docs.get("thing", f"d{i}").blob for i in range(3)] == [None, None, b"emb"]
    assert docs.get("thing", "d1").version == 1  # a CAS prepared before the wipe cannot restore the blob
    assert not docs.update(_doc("d1", expires=100.0, blob=b"emb"))
    assert docs.clear_blobs("thing", now=100.0) == 0
    assert docs.purge("thing", before=100.0) == ["d0"]  # strictly before
    assert docs.get("thing", "d0") is None and docs.get("thing", "d1") is not None
    assert docs.get("other", "other-kind").blob == b"emb"


def test_list_owned_newest_first_and_delete_owned(docs):
    for i, created in enumerate((5.0, 9.0, 1.0)):
        docs.insert(_doc(f"d{i}", created=created))
    docs.insert(_doc("theirs", owner="k2", created=20.0))
    assert [d.id for d in docs.list_owned("thing", "k1", 10)] == ["d1", "d0", "d2"]
    assert [d.id for d in docs.list_owned("thing", "k1", 2)] == ["d1", "d0"]
    assert docs.list_owned("thing", "k1", 0) == []
    assert docs.delete_owned("thing", ["k1", "nobody"]) == 3
    assert [d.id for d in docs.list_owned("thing", "k2", 10)] == ["theirs"]
    assert docs.delete("thing", "theirs") and not docs.delete("thing", "theirs")


def test_count_and_tally(docs):
    docs.insert(_doc("a", expires=100.0))
    docs.insert(_doc("b", expires=10.0))
    docs.insert(_doc("c", status="done", outcome="passed"))
    docs.insert(_doc("d", status="done", outcome="passed", owner="k2", created=7.0))
    assert docs.tally("thing", now=50.0) == {
        Group("live", None, False): 1, Group("live", None, True): 1, Group("done", "passed", False): 2}
    assert docs.count("thing", Match(owner="k2", created_since=7.0)) == 1
    assert docs.count("thing", Match(owner="k2", created_since=7.5)) == 0
    assert docs.count("thing", Match(statuses=("live", "done"), live_at=10.0)) == 3


def test_secret_is_made_once_and_survives_reopening(tmp_path):
    first = SqliteDocuments(tmp_path / "db.sqlite3")
    secret = first.secret("x")
    again = SqliteDocuments(tmp_path / "db.sqlite3")
    assert again.secret("x") == secret == first.secret("x") and len(secret) >= 32
    assert again.secret("y") != secret
    client = mongomock.MongoClient()
    mongo_secret = MongoDocuments(client).secret("x")
    assert MongoDocuments(client).secret("x") == mongo_secret != secret


def test_deleted_session_leaves_no_row(tmp_path):
    store = sessions.SqliteSessionStore(tmp_path / "db.sqlite3")
    store.create(_session_record("s1"))
    store.put_image("s1", 1, b"img", "image/jpeg", 1.0, 9e9)
    assert store.delete("s1")
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 0


def _session_record(sid: str) -> SessionRecord:
    return SessionRecord(sid, "k1", SessionParams(mode="passive"), 1000.0, 1600.0)


# ----------------------------------------------------------------------------- migration from the old layout

_OLD_SQLITE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE challenge_sessions (
    session_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
    status TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL, result TEXT, best_frame TEXT
);
CREATE INDEX challenge_sessions_expiry ON challenge_sessions (expires_at);
CREATE INDEX challenge_sessions_status ON challenge_sessions (status, expires_at);
CREATE TABLE liveness_sessions (
    session_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, params TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL, reference BLOB, verify_image TEXT
);
CREATE INDEX liveness_sessions_key ON liveness_sessions (key_id, created_at);
CREATE INDEX liveness_sessions_expiry ON liveness_sessions (expires_at);
CREATE TABLE liveness_session_images (
    session_id TEXT NOT NULL, attempt INTEGER NOT NULL, media_type TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, data BLOB NOT NULL, PRIMARY KEY (session_id, attempt)
);
CREATE INDEX liveness_session_images_expiry ON liveness_session_images (expires_at);
CREATE TABLE liveness_device_failures (key_id TEXT NOT NULL, device TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX liveness_device_failures_lookup ON liveness_device_failures (key_id, device, at);
"""

EMB = bytes(range(256)) * 2
STATE = S.new_state(["blink"], 0.0)
RESULT = {"verdict": "passed", "score": 0.97}
PARAMS = {"mode": "passive-verify", "device_correlation_id": "phone|1", "auth_token_ttl_seconds": 600,
          "send_results_to_client": False, "max_attempts": 3, "enable_session_image": True}
ATTEMPTS = {"attempts": [{"attempt_id": 1, "status": "completed"}]}


def _old_sqlite_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(_OLD_SQLITE)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("challenges_schema_version", "1"), ("sessions_schema_version", "1"),
        ("challenge_token_secret", "old-challenge-secret"), ("session_token_secret", "old-session-secret")])
    conn.executemany("INSERT INTO challenge_sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        ("c-live", "k1", 0.0, 100.0, S.ACTIVE, 4, json.dumps(STATE), None, "YmFzZTY0"),
        ("c-done", "k1", 0.0, 100.0, S.COMPLETED, 9, json.dumps(STATE), json.dumps(RESULT), None)])
    conn.executemany("INSERT INTO liveness_sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        ("s-verify", "k1", json.dumps(PARAMS), 1000.0, 1600.0, 2, json.dumps(ATTEMPTS), EMB,
         json.dumps({"quality_for_recognition": "high"})),
        ("s-plain", "k1", json.dumps({**PARAMS, "mode": "passive"}), 1001.0, 1601.0, 0, json.dumps({"attempts": []}),
         None, None)])
    conn.execute("INSERT INTO liveness_session_images VALUES ('s-verify', 1, 'image/jpeg', 1000.0, 9000.0, ?)",
                 (b"\xff\xd8jpeg",))
    conn.executemany("INSERT INTO liveness_device_failures VALUES (?, ?, ?)",
                     [("k1", "phone|1", 1000.0), ("k1", "phone|1", 1010.0), ("k2", "phone|1", 1020.0)])
    conn.commit()
    conn.close()


def _check_migrated(chal: challenges.SessionStore, sess: sessions.SessionStore) -> None:
    live = chal.get("c-live")
    assert (live.key_id, live.status, live.version, live.state, live.best_frame) == ("k1", S.ACTIVE, 4, STATE, "YmFzZTY0")
    assert chal.get("c-done").result == RESULT
    assert chal.counts(50.0) == {"active": 1, "passed": 1, "failed": 0, "expired": 0}
    assert chal.token_secret() == b"old-challenge-secret"
    rec = sess.get("s-verify")
    assert (rec.reference, rec.version, rec.state, rec.params.device_correlation_id, rec.verify_image) == (
        EMB, 2, ATTEMPTS, "phone|1", {"quality_for_recognition": "high"})
    assert [r.session_id for r in sess.list("k1", 10)] == ["s-plain", "s-verify"]
    assert sess.get("s-plain").reference is None and sess.get("s-plain").params.mode == "passive"
    assert sess.get_image("s-verify", 1, 2000.0) == (b"\xff\xd8jpeg", "image/jpeg")
    assert sess.failures_since("k1", "phone|1", 0.0) == (2, 1010.0)
    assert sess.failures_since("k2", "phone|1", 1020.0) == (1, 1020.0)
    assert sess.token_secret() == b"old-session-secret"
    # the migrated data behaves like new data
    assert sess.update(rec.with_state({"attempts": []}))
    assert chal.update(live.with_state(dict(STATE, status=S.STEPS_DONE)))
    assert chal.get("c-live").version == 5


def test_sqlite_file_of_the_old_layout_is_moved_into_documents(tmp_path):
    path = tmp_path / "old.sqlite3"
    _old_sqlite_file(path)
    opened: list = []
    start = threading.Barrier(4)

    def open_both() -> None:  # four workers starting on the file at once
        start.wait()
        opened.append((challenges.SqliteSessionStore(path), sessions.SqliteSessionStore(path)))

    threads = [threading.Thread(target=open_both) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 4
    _check_migrated(*opened[0])
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"meta", "documents"}
        kinds = dict(conn.execute("SELECT kind, COUNT(*) FROM documents GROUP BY kind").fetchall())
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert kinds == {"challenge_sessions": 2, "liveness_sessions": 2, "liveness_session_images": 1,
                     "liveness_device_failures": 3}  # copied once, whichever worker won
    # code that only knows the old layout must refuse the file, not recreate empty tables
    assert meta["challenges_schema_version"] == "2" and meta["sessions_schema_version"] == "2"
    chal, sess = challenges.SqliteSessionStore(path), sessions.SqliteSessionStore(path)  # a restart
    assert chal.get("c-done").result == RESULT and sess.failures_since("k1", "phone|1", 0.0)[0] == 2
    for store in [chal, sess, *(s for pair in opened for s in pair)]:
        store.close()


def test_new_sqlite_file_records_the_new_versions(tmp_path):
    path = tmp_path / "new.sqlite3"
    challenges.SqliteSessionStore(path).close()
    sessions.SqliteSessionStore(path).close()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE '%schema_version'").fetchall())
    assert tables == {"meta", "documents"}
    assert versions == {"documents_schema_version": "1", "challenges_schema_version": "2",
                        "sessions_schema_version": "2"}


def _old_mongo(db) -> None:
    db["challenge_sessions"].create_index([("status", 1), ("expires_at", 1)])
    db["challenge_sessions"].insert_many([
        {"_id": "c-live", "key_id": "k1", "created_at": 0.0, "expires_at": 100.0, "status": S.ACTIVE, "version": 4,
         "state": json.dumps(STATE), "result": None, "best_frame": "YmFzZTY0"},
        {"_id": "c-done", "key_id": "k1", "created_at": 0.0, "expires_at": 100.0, "status": S.COMPLETED,
         "version": 9, "state": json.dumps(STATE), "result": RESULT, "best_frame": None}])
    db["challenge_meta"].insert_one({"_id": "challenge_token_secret", "value": "old-challenge-secret"})
    db["liveness_sessions"].create_index([("key_id", 1), ("created_at", -1)])
    db["liveness_sessions"].insert_many([
        {"_id": "s-verify", "key_id": "k1", "params": json.dumps(PARAMS), "created_at": 1000.0, "expires_at": 1600.0,
         "version": 2, "state": json.dumps(ATTEMPTS), "reference": EMB,
         "verify_image": {"quality_for_recognition": "high"}},
        {"_id": "s-plain", "key_id": "k1", "params": json.dumps({**PARAMS, "mode": "passive"}), "created_at": 1001.0,
         "expires_at": 1601.0, "version": 0, "state": json.dumps({"attempts": []}), "reference": None,
         "verify_image": None}])
    db["liveness_session_images"].insert_one(
        {"_id": "s-verify:1", "session_id": "s-verify", "attempt": 1, "media_type": "image/jpeg",
         "created_at": 1000.0, "expires_at": 9000.0, "data": b"\xff\xd8jpeg"})
    db["liveness_device_failures"].create_index([("key_id", 1), ("device", 1), ("at", 1)])
    db["liveness_device_failures"].insert_many([
        {"_id": ObjectId(), "key_id": k, "device": "phone|1", "at": at}
        for k, at in (("k1", 1000.0), ("k1", 1010.0), ("k2", 1020.0))])
    db["liveness_sessions_meta"].insert_one({"_id": "session_token_secret", "value": "old-session-secret"})


def test_mongo_documents_of_the_old_shape_are_converted_in_place():
    client = mongomock.MongoClient()
    db = client["liveness"]
    _old_mongo(db)
    chal, sess = challenges.MongoSessionStore(client), sessions.MongoSessionStore(client)
    _check_migrated(chal, sess)
    for name in ("challenge_sessions", "liveness_sessions", "liveness_session_images", "liveness_device_failures"):
        assert db[name].count_documents({"body": {"$exists": False}}) == 0, name
        assert not {"key_id_1_created_at_-1", "status_1_expires_at_1", "key_id_1_device_1_at_1"} & set(
            db[name].index_information())
    assert db["liveness_device_failures"].count_documents({}) == 3
    assert all(isinstance(d["_id"], str) for d in db["liveness_device_failures"].find())
    assert {"challenge_meta", "liveness_sessions_meta"}.isdisjoint(db.list_collection_names())
    again_chal, again_sess = challenges.MongoSessionStore(client), sessions.MongoSessionStore(client)  # a restart
    assert again_chal.token_secret() == b"old-challenge-secret" and again_sess.token_secret() == b"old-session-secret"
    assert again_sess.failures_since("k1", "phone|1", 0.0) == (2, 1010.0)
    assert again_chal.get("c-live").version == 5
