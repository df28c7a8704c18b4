"""Rollout operations and the live routing table of one worker process.

Operations (load, promote, rollback, canary, shadow) validate first and then write the policy
store; every worker polls the store's revision, loads and warms whatever the new policy needs,
and only then swaps its routing table in one assignment.  Requests already routed keep their
versions (nothing is unloaded under them), so a swap fails no request.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from liveness import clock as clocks
from liveness.inference.base import InferenceBackend
from liveness.rollout.policy import ModelPolicy, PolicyError
from liveness.rollout.router import Resolved, Router, resolve
from liveness.rollout.store import PolicyStore
from liveness.rollout.validate import Validation, ValidationError, validate_version

log = logging.getLogger("liveness.rollout")


class RolloutError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelState:
    model: str
    on_disk: list[int]
    policy: ModelPolicy
    resolved: Resolved
    previous: int | None


class PolicyBook:
    """Policies as configured: the TOML file's, overridden by what rollout operations stored.
    Used by the CLI (no models loaded) and by every worker."""

    def __init__(self, repository: Path, models: list[str], file_policies: dict[str, ModelPolicy], store: PolicyStore | None) -> None:
        self.repository = repository
        self.models = models
        self.file_policies = file_policies
        self.store = store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def versions_on_disk(self, model: str) -> list[int]:
        d = self.repository / model
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / "model.onnx").is_file()) if d.is_dir() else []

    def states(self) -> dict[str, ModelState]:
        records = self.store.records() if self.store else {}
        out = {}
        for m in self.models:
            on_disk = self.versions_on_disk(m)
            if not on_disk:
                raise RolloutError(f"model {m} has no version in {self.repository}; run `make models`")
            rec = records.get(m)
            policy = rec.policy if rec else self.file_policies.get(m, ModelPolicy())
            out[m] = ModelState(m, on_disk, policy, resolve(policy, max(on_disk)), rec.previous if rec else None)
        return out

    # -- operations ----------------------------------------------------------------------------

    def _state(self, model: str) -> ModelState:
        states = self.states()
        if model not in states:
            raise RolloutError(f"unknown model {model!r}; known: {', '.join(self.models)}")
        return states[model]

    def validate(self, model: str, version: int) -> Validation:
        st = self._state(model)
        if version not in st.on_disk:
            raise RolloutError(f"{model} has no version {version} (on disk: {st.on_disk})")
        try:
            return validate_version(self.repository, model, version)
        except ValidationError as e:
            raise RolloutError(str(e)) from e

    def _write(self, model: str, policy: ModelPolicy, previous: int | None) -> int:
        if self.store is None:
            raise RolloutError("rollout operations need the policy store (auth/store disabled?)")
        return self.store.set(model, policy, previous)

    def promote(self, model: str, version: int) -> ModelPolicy:
        st = self._state(model)
        self.validate(model, version)
        policy = ModelPolicy("pin", version=version)
        self._write(model, policy, previous=st.resolved.stable if st.resolved.stable != version else st.previous)
        return policy

    def rollback(self, model: str) -> ModelPolicy:
        st = self._state(model)
        if st.resolved.mode in ("canary", "shadow"):  # rolling back an experiment: stop it
            policy = ModelPolicy("pin", version=st.resolved.stable)
            self._write(model, policy, previous=st.previous)
            return policy
        if st.previous is None:
            raise RolloutError(f"{model}: nothing to roll back to (no earlier promote recorded)")
        policy = ModelPolicy("pin", version=st.previous)
        self._write(model, policy, previous=None)
        return policy

    def experiment(self, model: str, mode: str, version: int, percent: float) -> ModelPolicy:
        st = self._state(model)
        self.validate(model, version)
        try:
            policy = ModelPolicy(mode, version=st.resolved.stable, candidate=version, percent=percent)  # type: ignore[arg-type]
        except PolicyError as e:
            raise RolloutError(str(e)) from e
        self._write(model, policy, previous=st.previous)
        return policy


class LiveRouting:
    """One worker's routing table, kept in step with the policy book.

    ``clock`` (monotonic seconds) times the refresh interval; tests pass a fake one."""

    def __init__(
        self,
        book: PolicyBook,
        backend: InferenceBackend,
        refresh_interval_s: float = 1.0,
        *,
        clock: clocks.Clock = clocks.monotonic,
    ) -> None:
        self.book = book
        self.backend = backend
        self.refresh_interval_s = refresh_interval_s
        self.clock = clock
        self._revision = book.store.revision() if book.store else 0
        table = {m: st.resolved for m, st in book.states().items()}
        self.router = Router(table)
        for model, version in sorted(self.router.required()):
            backend.load_sync(model, version)
        self._checked = self.clock()
        self._lock = asyncio.Lock()

    async def refresh(self, force: bool = False) -> None:
        """Cheap when nothing changed: one revision read per interval."""
        if self.book.store is None:
            return
        now = self.clock()
        if not force and now - self._checked < self.refresh_interval_s:
            return
        self._checked = now
        revision = await asyncio.to_thread(self.book.store.revision)
        if revision == self._revision and not force:
            return
        async with self._lock:
            states = await asyncio.to_thread(self.book.states)
            table = dict(self.router.table)
            for model, st in states.items():
                try:
                    for v in sorted(st.resolved.versions()):
                        if v not in self.backend.loaded_versions(model):
                            await self.backend.load(model, v)  # warmed before any traffic
                except Exception:
                    log.exception("%s: policy %s cannot be served here; keeping the previous routing", model, st.policy)
                    continue
                table[model] = st.resolved
            self.router = Router(table)  # the swap: one assignment
            self._revision = revision
            log.info("routing now %s (revision %d)", {m: r for m, r in table.items()}, revision)
