"""Where rollout state lives, so every worker process and every restart sees the same policy:
the per-model policy overrides set by rollout operations, a revision number workers poll, and
shadow-comparison aggregates (counts and score differences only: no per-request data)."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from liveness.rollout.policy import ModelPolicy
from liveness.storage.sqlite import SqliteFile


@dataclass(frozen=True)
class PolicyRecord:
    model: str
    policy: ModelPolicy
    previous: int | None  # the stable version before the last promote: what rollback returns to
    updated_at: str


@dataclass(frozen=True)
class ShadowStats:
    model: str
    stable: int
    candidate: int
    samples: int
    agree: int  # same verdict on the model's live probability at the service threshold
    mean_abs_diff: float
    max_abs_diff: float

    @property
    def agreement(self) -> float:
        return self.agree / self.samples if self.samples else 0.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class PolicyStore(ABC):
    @abstractmethod
    def revision(self) -> int:
        """Bumped by every change: workers poll this, cheaply."""

    @abstractmethod
    def records(self) -> dict[str, PolicyRecord]: ...

    @abstractmethod
    def set(self, model: str, policy: ModelPolicy, previous: int | None) -> int:
        """Store a model's policy; returns the new revision."""

    @abstractmethod
    def record_shadow(self, model: str, stable: int, candidate: int, p_stable: float, p_candidate: float, threshold: float) -> None: ...

    @abstractmethod
    def shadow_stats(self) -> list[ShadowStats]: ...

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE model_policy (
    model      TEXT PRIMARY KEY,
    policy     TEXT NOT NULL,
    previous   INTEGER,
    updated_at TEXT NOT NULL
);
CREATE TABLE shadow_stats (
    model     TEXT NOT NULL,
    stable    INTEGER NOT NULL,
    candidate INTEGER NOT NULL,
    samples   INTEGER NOT NULL DEFAULT 0,
    agree     INTEGER NOT NULL DEFAULT 0,
    sum_abs   REAL NOT NULL DEFAULT 0,
    max_abs   REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (model, stable, candidate)
)
"""


class SqlitePolicyStore(SqliteFile, PolicyStore):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._migrate_schema("rollout", 1, _SCHEMA)

    def revision(self) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'policy_revision'").fetchone()
        return int(row[0]) if row else 0

    def records(self) -> dict[str, PolicyRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT model, policy, previous, updated_at FROM model_policy").fetchall()
        return {m: PolicyRecord(m, ModelPolicy.from_dict(json.loads(p)), prev, at) for m, p, prev, at in rows}

    def set(self, model: str, policy: ModelPolicy, previous: int | None) -> int:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO model_policy (model, policy, previous, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (model) DO UPDATE SET policy = excluded.policy, previous = excluded.previous, "
                "updated_at = excluded.updated_at",
                (model, json.dumps(policy.as_dict()), previous, _now()),
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('policy_revision', '1') "
                "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
            (rev,) = conn.execute("SELECT value FROM meta WHERE key = 'policy_revision'").fetchone()
        return int(rev)

    def record_shadow(self, model: str, stable: int, candidate: int, p_stable: float, p_candidate: float, threshold: float) -> None:
        diff = abs(p_stable - p_candidate)
        agree = int((p_stable >= threshold) == (p_candidate >= threshold))
        with self._write() as conn:
            conn.execute(
                "INSERT INTO shadow_stats (model, stable, candidate, samples, agree, sum_abs, max_abs) "
                "VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT (model, stable, candidate) DO UPDATE SET "
                "samples = samples + 1, agree = agree + excluded.agree, sum_abs = sum_abs + excluded.sum_abs, "
                "max_abs = MAX(max_abs, excluded.max_abs)",
                (model, stable, candidate, agree, diff, diff),
            )

    def shadow_stats(self) -> list[ShadowStats]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT model, stable, candidate, samples, agree, sum_abs, max_abs FROM shadow_stats ORDER BY model, candidate"
            ).fetchall()
        return [ShadowStats(m, s, c, n, a, (sa / n if n else 0.0), mx) for m, s, c, n, a, sa, mx in rows]


class MongoPolicyStore(PolicyStore):
    def __init__(self, client_or_uri: Any, db_name: str = "liveness") -> None:
        from pymongo import MongoClient

        self.client = MongoClient(client_or_uri, tz_aware=True) if isinstance(client_or_uri, str) else client_or_uri
        db = self.client[db_name]
        self.policies, self.meta, self.shadow = db["model_policy"], db["rollout_meta"], db["shadow_stats"]

    def revision(self) -> int:
        doc = self.meta.find_one({"_id": "policy_revision"})
        return int(doc["value"]) if doc else 0

    def records(self) -> dict[str, PolicyRecord]:
        return {
            d["_id"]: PolicyRecord(d["_id"], ModelPolicy.from_dict(d["policy"]), d.get("previous"), d["updated_at"])
            for d in self.policies.find({})
        }

    def set(self, model: str, policy: ModelPolicy, previous: int | None) -> int:
        from pymongo import ReturnDocument

        self.policies.replace_one(
            {"_id": model}, {"_id": model, "policy": policy.as_dict(), "previous": previous, "updated_at": _now()}, upsert=True
        )
        doc = self.meta.find_one_and_update(
            {"_id": "policy_revision"}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return int(doc["value"])

    def record_shadow(self, model: str, stable: int, candidate: int, p_stable: float, p_candidate: float, threshold: float) -> None:
        diff = abs(p_stable - p_candidate)
        agree = int((p_stable >= threshold) == (p_candidate >= threshold))
        self.shadow.update_one(
            {"_id": f"{model}:{stable}:{candidate}"},
            {"$set": {"model": model, "stable": stable, "candidate": candidate},
             "$inc": {"samples": 1, "agree": agree, "sum_abs": diff}, "$max": {"max_abs": diff}},
            upsert=True,
        )

    def shadow_stats(self) -> list[ShadowStats]:
        out = []
        for d in self.shadow.find({}).sort([("model", 1), ("candidate", 1)]):
            n = int(d.get("samples", 0))
            out.append(ShadowStats(d["model"], d["stable"], d["candidate"], n, int(d.get("agree", 0)),
                                   d.get("sum_abs", 0.0) / n if n else 0.0, float(d.get("max_abs", 0.0))))
        return out


def open_policy_store(sqlite_path: str, mongodb_uri: str | None) -> PolicyStore:
    return MongoPolicyStore(mongodb_uri) if mongodb_uri else SqlitePolicyStore(sqlite_path)
