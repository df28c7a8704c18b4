"""Resolve policies to version numbers and route each request."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Callable, Mapping

from liveness.rollout.policy import ModelPolicy


@dataclass(frozen=True)
class Route:
    primary: dict[str, int]  # model -> version that decides
    shadow: dict[str, int] = field(default_factory=dict)  # model -> version run on the side, never returned


@dataclass(frozen=True)
class Resolved:
    """A policy with every version a number: what the router uses on the hot path."""

    stable: int
    candidate: int | None = None
    mode: str = "latest"
    percent: float = 0.0

    def versions(self) -> set[int]:
        return {self.stable} | ({self.candidate} if self.candidate is not None else set())


def resolve(policy: ModelPolicy, latest: int) -> Resolved:
    if policy.mode == "latest":
        return Resolved(latest)
    stable = policy.version if policy.version is not None else latest
    if policy.mode == "pin":
        return Resolved(stable, mode="pin")
    return Resolved(stable, policy.candidate, policy.mode, policy.percent)


def canary_bucket(model: str, sticky_id: str) -> float:
    """0..100, stable for a (model, API key): a client sees one version, not a mix."""
    h = hashlib.sha256(f"{model}\0{sticky_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 * 100


class Router:
    """Immutable routing table; rollout operations build a new one and swap it atomically."""

    def __init__(self, table: Mapping[str, Resolved], rand: Callable[[], float] = random.random) -> None:
        self.table = dict(table)
        self._rand = rand

    def route(self, sticky_id: str | None) -> Route:
        primary: dict[str, int] = {}
        shadow: dict[str, int] = {}
        for model, r in self.table.items():
            primary[model] = r.stable
            if r.candidate is None:
                continue
            if r.mode == "canary":
                bucket = canary_bucket(model, sticky_id) if sticky_id else self._rand() * 100
                if bucket < r.percent:
                    primary[model] = r.candidate
            elif r.mode == "shadow" and self._rand() * 100 < r.percent:
                shadow[model] = r.candidate
        return Route(primary, shadow)

    def required(self) -> set[tuple[str, int]]:
        return {(m, v) for m, r in self.table.items() for v in r.versions()}
