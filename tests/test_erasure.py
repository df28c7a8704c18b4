"""Nothing biometric left readable in the SQLite files after a delete: a marker written as an
image blob and inside a JSON body must be gone from the database file *and* its write-ahead log
as soon as delete / purge / blob wipe return (secure_delete zeroes the freed pages, the log is
checkpointed and truncated).  A second connection, as another worker would hold, stays open."""

from __future__ import annotations

import base64
import os
import sqlite3

import pytest

from liveness.storage.documents import Document, SqliteDocuments


def on_disk(path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "liveness.sqlite3"
    s = SqliteDocuments(path)
    other = sqlite3.connect(path)  # another worker's connection, idle between its transactions
    other.execute("SELECT COUNT(*) FROM documents").fetchone()
    yield s, path
    other.close()
    s.close()


def marker() -> bytes:
    return b"FACE-" + os.urandom(24).hex().encode() + b"-FACE"


def put(s: SqliteDocuments, doc_id: str, blob: bytes, frame: bytes, expires_at: float = 2000.0) -> None:
    s.insert(Document(kind="liveness_session_images", id=doc_id, owner="sess", created_at=1000.0,
                      expires_at=expires_at, blob=blob, body={"best_frame": base64.b64encode(frame).decode()}))


@pytest.mark.parametrize("how", ["delete", "delete_owned", "purge"])
def test_deleted_images_are_gone_from_the_database_and_its_log(store, how):
    s, path = store
    blob, frame = marker() * 2000, marker()  # a blob on overflow pages, a frame inside the JSON body
    put(s, "a", blob, frame)
    put(s, "keep", b"other", b"other", expires_at=9000.0)
    data = on_disk(path)
    assert blob[:60] in data and base64.b64encode(frame)[:40] in data  # the check can see them
    if how == "delete":
        assert s.delete("liveness_session_images", "a")
    elif how == "delete_owned":
        s.delete_owned("liveness_session_images", ["sess"])
    else:
        assert s.purge("liveness_session_images", before=5000.0) == ["a"]
    data = on_disk(path)
    assert blob[:60] not in data and base64.b64encode(frame)[:40] not in data


def test_a_wiped_embedding_is_gone_too(store):
    s, path = store
    embedding = marker() * 20
    s.insert(Document(kind="liveness_sessions", id="s1", owner="k", created_at=1.0, expires_at=10.0, blob=embedding))
    assert embedding in on_disk(path)
    assert s.clear_blobs("liveness_sessions", now=10.0) == 1
    assert embedding not in on_disk(path)
    assert s.get("liveness_sessions", "s1").blob is None
