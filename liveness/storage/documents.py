"""Versioned documents: the one storage shape behind every session-like store.

A ``Document`` is a row of some ``kind`` (``challenge_sessions``, ``liveness_sessions``, ...)
with the few fields a store must query on (owner, times, status, outcome), a JSON ``body`` it
never looks into, an optional ``blob`` that can be wiped on its own, and a ``version`` every
``update`` compares and bumps.  The stores here know nothing about what the kinds mean: the
modules that own a kind map their records to documents and back.

SQLite keeps every kind in one ``documents`` table keyed by (kind, id).  MongoDB keeps each kind
in a collection of that name, so kinds never scan each other and the collections older stores
wrote convert in place (``MongoDocuments.adopt``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Mapping, NamedTuple, Sequence

from liveness.storage.sqlite import SqliteFile


@dataclass(frozen=True, kw_only=True)
class Document:
    """``owner``, ``created_at`` and ``expires_at`` are fixed when the document is written
    (``insert``/``upsert``); ``update`` changes status, outcome, body and blob."""

    kind: str
    id: str
    created_at: float
    expires_at: float  # expired at ``t`` once ``expires_at <= t``
    owner: str = ""
    status: str = ""
    outcome: str | None = None  # a verdict to tally without opening the body
    version: int = 0
    body: dict[str, Any] = field(default_factory=dict)
    blob: bytes | None = None


@dataclass(frozen=True)
class Match:
    """Documents of one kind for which every field that is set holds."""

    owner: str | None = None
    statuses: tuple[str, ...] | None = None
    live_at: float | None = None  # not yet expired at this time: expires_at > live_at
    created_since: float | None = None  # created_at >= created_since


@dataclass(frozen=True)
class Cap:
    """Refuse an insert while ``limit`` documents of its kind with a status in ``statuses`` are
    unexpired at ``now`` (only the new document's owner's, with ``per_owner``), or - with
    ``window_s`` - while ``limit`` were created in the last ``window_s`` seconds, live or not
    (a rate).  ``statuses`` None: any status."""

    limit: int
    statuses: tuple[str, ...] | None
    now: float
    per_owner: bool = False
    window_s: float | None = None

    def match(self, doc: Document) -> Match:
        owner = doc.owner if self.per_owner else None
        if self.window_s is not None:
            return Match(owner=owner, statuses=self.statuses, created_since=self.now - self.window_s)
        return Match(owner=owner, statuses=self.statuses, live_at=self.now)


class Group(NamedTuple):
    status: str
    outcome: str | None
    expired: bool


class DocumentExists(Exception):
    def __init__(self, kind: str, doc_id: str) -> None:
        super().__init__(f"{kind} document {doc_id!r} already exists")
        self.kind, self.doc_id = kind, doc_id


class DocumentStore(ABC):
    def insert(self, doc: Document, cap: Cap | None = None) -> bool:
        """Write a new document; False (nothing written) when ``cap`` is reached.  Raises
        DocumentExists for a taken (kind, id)."""
        return self.insert_capped(doc, () if cap is None else (cap,)) is None

    @abstractmethod
    def insert_capped(self, doc: Document, caps: Sequence[Cap]) -> Cap | None:
        """Write a new document unless one of ``caps`` is reached; -> the first cap reached
        (nothing written), or None (written)."""

    @abstractmethod
    def upsert(self, doc: Document) -> None:
        """Write ``doc`` whole, replacing any document with its (kind, id)."""

    @abstractmethod
    def get(self, kind: str, doc_id: str) -> Document | None: ...

    @abstractmethod
    def update(self, doc: Document) -> bool:
        """Compare-and-set: write ``doc`` if the stored version is still ``doc.version`` (the
        stored one becomes ``doc.version + 1``); False when it changed or the document is gone."""

    @abstractmethod
    def delete(self, kind: str, doc_id: str) -> bool:
        """-> whether it existed."""

    @abstractmethod
    def delete_owned(self, kind: str, owners: Collection[str]) -> int:
        """Delete the documents of any of ``owners``; -> how many."""

    @abstractmethod
    def list_owned(self, kind: str, owner: str, limit: int) -> list[Document]:
        """The owner's documents, newest (``created_at``) first."""

    @abstractmethod
    def count(self, kind: str, match: Match) -> int: ...

    @abstractmethod
    def tally(self, kind: str, now: float, owner: str | None = None) -> Counter[Group]:
        """How many documents of the kind (of ``owner`` only, if given) per (status, outcome,
        expired at ``now``)."""

    @abstractmethod
    def purge(self, kind: str, before: float) -> list[str]:
        """Delete the documents that expired before ``before`` (``expires_at < before``);
        -> their ids."""

    @abstractmethod
    def clear_blobs(self, kind: str, now: float) -> int:
        """Drop the blobs of documents expired at ``now``, bumping their version so an update
        prepared before cannot write a blob back; -> how many."""

    @abstractmethod
    def secret(self, name: str) -> bytes:
        """A random secret made on first use and then the same for every worker and restart."""

    def close(self) -> None:
        pass


# Legacy rows/documents -> Document, supplied by the module that owns the kind.
Convert = Callable[[Mapping[str, Any]], Document]


def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body)


def _load(text: str) -> dict[str, Any]:
    return json.loads(text)


def _chunks(items: Collection[str], size: int = 500) -> Iterator[list[str]]:
    # SQLite caps the bound parameters of a statement; Mongo a query document's size.
    listed = list(items)
    for i in range(0, len(listed), size):
        yield listed[i:i + size]


# ----------------------------------------------------------------------------- SQLite

_SCHEMA = """
CREATE TABLE documents (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status     TEXT NOT NULL,
    outcome    TEXT,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    blob       BLOB,
    PRIMARY KEY (kind, id)
);
CREATE INDEX documents_owner ON documents (kind, owner, created_at);
CREATE INDEX documents_expiry ON documents (kind, expires_at);
CREATE INDEX documents_status ON documents (kind, status, expires_at, outcome)
"""

_COLS = "kind, id, owner, created_at, expires_at, status, outcome, version, body, blob"
_INSERT = f"INSERT INTO documents ({_COLS}) VALUES ({', '.join('?' * len(_COLS.split(', ')))})"
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _values(doc: Document) -> tuple[Any, ...]:
    return (doc.kind, doc.id, doc.owner, doc.created_at, doc.expires_at, doc.status, doc.outcome, doc.version,
            _dump(doc.body), doc.blob)


def _from_row(r: tuple[Any, ...]) -> Document:
    return Document(kind=r[0], id=r[1], owner=r[2], created_at=r[3], expires_at=r[4], status=r[5], outcome=r[6],
                    version=r[7], body=_load(r[8]), blob=bytes(r[9]) if r[9] is not None else None)


def _where(kind: str, m: Match) -> tuple[str, list[Any]]:
    clauses, params = ["kind = ?"], [kind]
    if m.owner is not None:
        clauses.append("owner = ?")
        params.append(m.owner)
    if m.statuses is not None:
        clauses.append(f"status IN ({', '.join('?' * len(m.statuses))})")
        params.extend(m.statuses)
    if m.live_at is not None:
        clauses.append("expires_at > ?")
        params.append(m.live_at)
    if m.created_since is not None:
        clauses.append("created_at >= ?")
        params.append(m.created_since)
    return " AND ".join(clauses), params


def _count(conn: sqlite3.Connection, kind: str, m: Match) -> int:
    where, params = _where(kind, m)
    return conn.execute(f"SELECT COUNT(*) FROM documents WHERE {where}", params).fetchone()[0]


def _insert(conn: sqlite3.Connection, doc: Document) -> None:
    try:
        conn.execute(_INSERT, _values(doc))
    except sqlite3.IntegrityError as exc:
        raise DocumentExists(doc.kind, doc.id) from exc


def _move_table(conn: sqlite3.Connection, table: str, convert: Convert) -> None:
    if not _TABLE_NAME.match(table):
        raise ValueError(f"not a table name: {table!r}")
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is None:
        return
    cur = conn.execute(f"SELECT * FROM {table}")
    names = [c[0] for c in cur.description]
    for r in cur:  # streamed: a table of session images need not fit in memory
        _insert(conn, convert(dict(zip(names, r))))
    conn.execute(f"DROP TABLE {table}")


class SqliteDocuments(SqliteFile, DocumentStore):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._migrate_schema("documents", 1, _SCHEMA)

    def adopt_tables(self, component: str, version: int, tables: Mapping[str, Convert]) -> None:
        """Once per file: move the rows of an older store's ``tables`` into documents and drop
        the tables, as ``component``'s schema step to ``version`` (a new file just records it).
        It shares the write transaction of the version check, so two workers opening the file
        at once cannot both copy, and a crash leaves the old tables whole."""
        def move(conn: sqlite3.Connection) -> None:
            for table, convert in tables.items():
                _move_table(conn, table, convert)

        self._migrate_schema(component, version, "", {version: move})

    def insert_capped(self, doc: Document, caps: Sequence[Cap]) -> Cap | None:
        with self._write() as conn:  # the counts and the insert under one write lock: the caps are exact
            for cap in caps:
                if _count(conn, doc.kind, cap.match(doc)) >= cap.limit:
                    return cap
            _insert(conn, doc)
        return None

    def upsert(self, doc: Document) -> None:
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLS.split(", ")[2:])
        with self._write() as conn:
            conn.execute(f"{_INSERT} ON CONFLICT (kind, id) DO UPDATE SET {updates}", _values(doc))

    def get(self, kind: str, doc_id: str) -> Document | None:
        with self._read() as conn:
            r = conn.execute(f"SELECT {_COLS} FROM documents WHERE kind = ? AND id = ?", (kind, doc_id)).fetchone()
        return _from_row(r) if r else None

    def update(self, doc: Document) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE documents SET status = ?, outcome = ?, body = ?, blob = ?, version = version + 1 "
                "WHERE kind = ? AND id = ? AND version = ?",
                (doc.status, doc.outcome, _dump(doc.body), doc.blob, doc.kind, doc.id, doc.version),
            )
            return cur.rowcount == 1

    def delete(self, kind: str, doc_id: str) -> bool:
        with self._write(erase=True) as conn:
            return conn.execute("DELETE FROM documents WHERE kind = ? AND id = ?", (kind, doc_id)).rowcount == 1

    def delete_owned(self, kind: str, owners: Collection[str]) -> int:
        n = 0
        with self._write(erase=True) as conn:
            for chunk in _chunks(owners):
                n += conn.execute(f"DELETE FROM documents WHERE kind = ? AND owner IN ({', '.join('?' * len(chunk))})",
                                  (kind, *chunk)).rowcount
        return n

    def list_owned(self, kind: str, owner: str, limit: int) -> list[Document]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_COLS} FROM documents WHERE kind = ? AND owner = ? ORDER BY created_at DESC LIMIT ?",
                (kind, owner, max(limit, 0)),
            ).fetchall()
        return [_from_row(r) for r in rows]

    def count(self, kind: str, match: Match) -> int:
        with self._read() as conn:
            return _count(conn, kind, match)

    def tally(self, kind: str, now: float, owner: str | None = None) -> Counter[Group]:
        where, params = _where(kind, Match(owner=owner))
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT status, outcome, expires_at <= ?, COUNT(*) FROM documents WHERE {where} GROUP BY 1, 2, 3",
                (now, *params),
            ).fetchall()
        return Counter({Group(s, o, bool(e)): n for s, o, e, n in rows})

    def purge(self, kind: str, before: float) -> list[str]:
        with self._write(erase=True) as conn:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM documents WHERE kind = ? AND expires_at < ?", (kind, before))]
            conn.execute("DELETE FROM documents WHERE kind = ? AND expires_at < ?", (kind, before))
        return ids

    def clear_blobs(self, kind: str, now: float) -> int:
        with self._write(erase=True) as conn:
            return conn.execute(
                "UPDATE documents SET blob = NULL, version = version + 1 "
                "WHERE kind = ? AND blob IS NOT NULL AND expires_at <= ?", (kind, now),
            ).rowcount

    def secret(self, name: str) -> bytes:
        return self._stored_secret(name)


# ----------------------------------------------------------------------------- MongoDB

# Default index names (field_direction_...), so an older store's identical index is reused
# rather than refused as a duplicate under another name.
_MONGO_INDEXES: tuple[tuple[tuple[str, int], ...], ...] = (
    (("owner", 1), ("created_at", -1)),
    (("expires_at", 1),),
    (("status", 1), ("expires_at", 1), ("outcome", 1)),
)


def _index_name(keys: tuple[tuple[str, int], ...]) -> str:
    return "_".join(f"{k}_{d}" for k, d in keys)


def _to_mongo(doc: Document) -> dict[str, Any]:
    # The body goes in as JSON text so it reads back exactly as from SQLite (BSON would refuse
    # non-string keys and turn tuples into lists differently); nothing queries inside it.
    return {"_id": doc.id, "owner": doc.owner, "created_at": doc.created_at, "expires_at": doc.expires_at,
            "status": doc.status, "outcome": doc.outcome, "version": doc.version, "body": _dump(doc.body),
            "blob": doc.blob}


def _from_mongo(kind: str, d: Mapping[str, Any]) -> Document:
    return Document(kind=kind, id=d["_id"], owner=d["owner"], created_at=d["created_at"], expires_at=d["expires_at"],
                    status=d["status"], outcome=d.get("outcome"), version=d["version"], body=_load(d["body"]),
                    blob=bytes(d["blob"]) if d.get("blob") is not None else None)


def _filter(m: Match) -> dict[str, Any]:
    q: dict[str, Any] = {}
    if m.owner is not None:
        q["owner"] = m.owner
    if m.statuses is not None:
        q["status"] = {"$in": list(m.statuses)}
    if m.live_at is not None:
        q["expires_at"] = {"$gt": m.live_at}
    if m.created_since is not None:
        q["created_at"] = {"$gte": m.created_since}
    return q


_LEGACY = {"body": {"$exists": False}}  # every document this store writes has a body


class MongoDocuments(DocumentStore):
    def __init__(self, client_or_uri: Any, db_name: str = "liveness") -> None:
        from pymongo import MongoClient

        self._owns_client = isinstance(client_or_uri, str)
        self.client = MongoClient(client_or_uri) if self._owns_client else client_or_uri
        self.db = self.client[db_name]
        self.meta = self.db["meta"]
        self._indexed: set[str] = set()

    def _coll(self, kind: str) -> Any:
        coll = self.db[kind]
        if kind not in self._indexed:
            for keys in _MONGO_INDEXES:
                coll.create_index(list(keys))
            self._indexed.add(kind)
        return coll

    # -- migration from older stores

    def adopt(self, kind: str, convert: Convert) -> int:
        """Rewrite, in place, the documents an older store left in ``kind``'s collection (those
        without a ``body``) and drop its indexes this store does not use; -> how many.  Each
        rewrite is conditional on the document still being old, so workers doing this at once,
        or serving already, never write one twice nor bring back one deleted meanwhile."""
        coll = self._coll(kind)
        n = sum(self._adopt_one(coll, old, convert(old)) for old in coll.find(_LEGACY))
        self._drop_foreign_indexes(coll)
        return n

    @staticmethod
    def _adopt_one(coll: Any, old: Mapping[str, Any], doc: Document) -> bool:
        from pymongo.errors import DuplicateKeyError

        new = _to_mongo(doc)
        if new["_id"] == old["_id"]:
            return coll.replace_one({"_id": old["_id"], **_LEGACY}, new).modified_count == 1
        # An _id cannot change in place: whoever takes the old document away writes the new one.
        if coll.find_one_and_delete({"_id": old["_id"], **_LEGACY}) is None:
            return False
        try:
            coll.insert_one(new)
        except DuplicateKeyError:
            return False
        return True

    @staticmethod
    def _drop_foreign_indexes(coll: Any) -> None:
        wanted = {"_id_"} | {_index_name(keys) for keys in _MONGO_INDEXES}
        for name in list(coll.index_information()):
            if name not in wanted:
                coll.drop_index(name)

    def adopt_secret(self, name: str, collection: str) -> None:
        """Keep the secret an older store kept under ``name`` in ``collection`` (so tokens it
        signed stay valid), then remove it there; the collection goes once empty."""
        old_coll = self.db[collection]
        old = old_coll.find_one({"_id": name})
        if old is not None:
            self._set_once(name, str(old["value"]))
            old_coll.delete_one({"_id": name})
        if old_coll.count_documents({}) == 0:
            old_coll.drop()

    def _set_once(self, name: str, value: str) -> None:
        from pymongo.errors import DuplicateKeyError

        try:
            self.meta.update_one({"_id": name}, {"$setOnInsert": {"value": value}}, upsert=True)
        except DuplicateKeyError:  # a concurrent upsert inserted it first: theirs stands
            pass

    # -- DocumentStore

    def insert_capped(self, doc: Document, caps: Sequence[Cap]) -> Cap | None:
        from pymongo.errors import DuplicateKeyError

        coll = self._coll(doc.kind)
        # Count-then-insert is not atomic across processes: concurrent inserts can overshoot a
        # cap by their number (best effort; SQLite's is exact).
        for cap in caps:
            if coll.count_documents(_filter(cap.match(doc))) >= cap.limit:
                return cap
        try:
            coll.insert_one(_to_mongo(doc))
        except DuplicateKeyError as exc:
            raise DocumentExists(doc.kind, doc.id) from exc
        return None

    def upsert(self, doc: Document) -> None:
        self._coll(doc.kind).replace_one({"_id": doc.id}, _to_mongo(doc), upsert=True)

    def get(self, kind: str, doc_id: str) -> Document | None:
        d = self._coll(kind).find_one({"_id": doc_id})
        return _from_mongo(kind, d) if d else None

    def update(self, doc: Document) -> bool:
        res = self._coll(doc.kind).update_one(
            {"_id": doc.id, "version": doc.version},
            {"$set": {"status": doc.status, "outcome": doc.outcome, "body": _dump(doc.body), "blob": doc.blob},
             "$inc": {"version": 1}},
        )
        return res.matched_count == 1

    def delete(self, kind: str, doc_id: str) -> bool:
        return self._coll(kind).delete_one({"_id": doc_id}).deleted_count == 1

    def delete_owned(self, kind: str, owners: Collection[str]) -> int:
        coll = self._coll(kind)
        return sum(coll.delete_many({"owner": {"$in": chunk}}).deleted_count for chunk in _chunks(owners))

    def list_owned(self, kind: str, owner: str, limit: int) -> list[Document]:
        if limit <= 0:  # Mongo reads limit(0) as "no limit"
            return []
        found = self._coll(kind).find({"owner": owner}).sort("created_at", -1).limit(limit)
        return [_from_mongo(kind, d) for d in found]

    def count(self, kind: str, match: Match) -> int:
        return self._coll(kind).count_documents(_filter(match))

    def tally(self, kind: str, now: float, owner: str | None = None) -> Counter[Group]:
        groups = self._coll(kind).aggregate([{"$match": _filter(Match(owner=owner))}, {"$group": {
            "_id": {"status": "$status", "outcome": "$outcome", "expired": {"$lte": ["$expires_at", now]}},
            "n": {"$sum": 1},
        }}])
        return Counter({Group(g["_id"]["status"], g["_id"].get("outcome"), bool(g["_id"]["expired"])): g["n"]
                        for g in groups})

    def purge(self, kind: str, before: float) -> list[str]:
        coll = self._coll(kind)
        ids = [d["_id"] for d in coll.find({"expires_at": {"$lt": before}}, {"_id": 1})]
        for chunk in _chunks(ids):
            coll.delete_many({"_id": {"$in": chunk}})
        return ids

    def clear_blobs(self, kind: str, now: float) -> int:
        return self._coll(kind).update_many(
            {"blob": {"$ne": None}, "expires_at": {"$lte": now}},
            {"$set": {"blob": None}, "$inc": {"version": 1}},
        ).modified_count

    def secret(self, name: str) -> bytes:
        self._set_once(name, secrets.token_urlsafe(48))
        return str(self.meta.find_one({"_id": name})["value"]).encode("utf-8")

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
