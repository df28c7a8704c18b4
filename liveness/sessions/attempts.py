"""A client's attempts in an app-server session (README "Sessions"): the session token opens one
(``begin``: reserved before any model work, by compare-and-set on the session row, so
``max_attempts`` holds across workers), a challenge attempt is found again by its challenge
session (``resume``), its working data is kept on the row (challenge id, verify samples, the
frames' digest chain), and ``finish`` records the result or the input error.  An error of ours
(5xx) gives the attempt back (``release``).  A ``realface`` result ends the session; any other
outcome counts as a failure of the device (``DeviceThrottle``).  Attempts are ``Prepaid``: never
charged (the session's creation paid).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from liveness.detection.base import Face
from liveness.errors import (
    ATTEMPTS_EXHAUSTED,
    INTERNAL_ERROR,
    INVALID_SESSION_TOKEN,
    SESSION_COMPLETED,
    SESSION_NOT_FOUND,
    SESSION_TOKEN_EXPIRED,
    TOKEN_MODE_MISMATCH,
    LivenessError,
)
from liveness.keys import Prepaid
from liveness.sessions import model as M
from liveness.sessions.model import SessionParams, SessionRecord, iso
from liveness.sessions.store import SessionStore
from liveness.sessions.throttle import DeviceThrottle
from liveness.settings import Settings
from liveness.tokens import SessionTokens

if TYPE_CHECKING:
    from liveness.admission import Admission

log = logging.getLogger("liveness.sessions")

CAS_RETRIES = 8


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Grant:
    """One attempt a client's token opened: who pays (nobody: ``Prepaid``), what it may see."""

    session_id: str
    key_id: str
    params: SessionParams
    attempt_id: int
    received_at: float
    started: float = field(default_factory=time.perf_counter)
    reference: bytes | None = None  # the verify embedding (float32), verify modes only
    reference_version: int | None = None  # the embedder version that made it (embeddings of
    # different versions are not comparable, so probes use the same one even after a promote)

    @property
    def credential(self) -> Prepaid:
        return Prepaid(self.key_id, self.session_id)


def _grant(rec: SessionRecord, attempt_id: int, now: float) -> Grant:
    return Grant(rec.session_id, rec.key_id, rec.params, attempt_id, now, reference=rec.reference,
                 reference_version=rec.state.get("reference_version"))


@dataclass(frozen=True)
class AttemptResult:
    decision: str  # realface | spoofface
    score: float | None
    threshold: float
    face: Face | None
    models: list[dict[str, Any]]
    digest: str
    reasons: tuple[str, ...] = ()
    verify: dict[str, Any] | None = None

    def as_dict(self, latency_ms: float) -> dict[str, Any]:
        d: dict[str, Any] = {
            "decision": self.decision,
            "score": None if self.score is None else round(self.score, 6),
            "threshold": self.threshold,
            "target_face_rectangle": self.face.rectangle() if self.face is not None else None,
            "model_versions": self.models,
            "latency_ms": round(latency_ms, 1),
            "digest": self.digest,
        }
        if self.reasons:
            d["reasons"] = list(self.reasons)
        if self.verify is not None:
            d["verify_result"] = self.verify
        return d


@dataclass(eq=False)
class Attempts:
    admission: "Admission"
    settings: Settings
    store: SessionStore
    tokens: SessionTokens
    throttle: DeviceThrottle
    _: KW_ONLY
    clock: Callable[[], float]
    housekeeping: Callable[[], Awaitable[None]]  # the periodic purge, run as attempts begin

    async def _session_for(self, token: str, family: str) -> SessionRecord:
        claims = self.tokens.verify(token, self.clock())
        if claims.mode.split("-")[0] != family:
            raise LivenessError(
                TOKEN_MODE_MISMATCH, f"This session token is for mode '{claims.mode}', not for the {family} endpoint.",
                {"mode": claims.mode},
            )
        rec = await asyncio.to_thread(self.store.get, claims.session_id)
        if rec is None:  # deleted by the app server: the token is dead
            raise LivenessError(INVALID_SESSION_TOKEN, "The session token is invalid.")
        if rec.expired(self.clock()):
            raise LivenessError(SESSION_TOKEN_EXPIRED, "The session has expired; ask the app server for a new one.")
        await self.admission.check(Prepaid(rec.key_id, rec.session_id))  # a revoked key stops its sessions
        return rec

    async def begin(self, token: str, family: str, request: dict[str, Any] | None = None) -> Grant:
        """Reserve one attempt of the token's session, before any model work.  ``request``: what an
        adapter with an audit trail keeps of the call (its id, URL, method, content type and length,
        user agent: no body), stored on the attempt and read only by ``SessionCrud.audit``."""
        rec = await self._session_for(token, family)
        await self.housekeeping()
        for _ in range(CAS_RETRIES):
            now = self.clock()
            if rec.passed():
                raise LivenessError(SESSION_COMPLETED, "This session already has a realface result.")
            if len(rec.attempts) >= rec.params.max_attempts:
                raise LivenessError(ATTEMPTS_EXHAUSTED, f"All {rec.params.max_attempts} attempts of this session are used.")
            await self.throttle.check(rec.key_id, rec.params.device_correlation_id, now)
            attempt_id = max((a["attempt_id"] for a in rec.attempts), default=0) + 1
            entry: dict[str, Any] = {"attempt_id": attempt_id, "status": M.RUNNING, "received_at": iso(now)}
            if request is not None:
                entry["request"] = dict(request)
            state = {**rec.state, "attempts": [*rec.attempts, entry]}
            if await asyncio.to_thread(self.store.update, rec.with_state(state)):
                return _grant(rec, attempt_id, now)
            rec = await self._session_for(token, family)
        raise LivenessError(INTERNAL_ERROR, "The session is too busy; try again.")

    async def resume(self, token: str, challenge_session_id: Any) -> Grant:
        """The running challenge attempt a token's frames and ``complete`` belong to."""
        rec = await self._session_for(token, "challenge")
        for a in rec.attempts:
            if a.get("challenge_session_id") == challenge_session_id and isinstance(challenge_session_id, str):
                return _grant(rec, a["attempt_id"], self.clock())
        raise LivenessError(SESSION_NOT_FOUND, "No such challenge session for this session token.")

    async def _change(self, grant: Grant, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        for _ in range(CAS_RETRIES):
            rec = await asyncio.to_thread(self.store.get, grant.session_id)
            if rec is None:
                return  # deleted meanwhile: nothing to record
            attempts = []
            for a in rec.attempts:
                if a["attempt_id"] == grant.attempt_id:
                    a = change(dict(a))
                if a is not None:
                    attempts.append(a)
            if await asyncio.to_thread(self.store.update, rec.with_state({**rec.state, "attempts": attempts})):
                return
        raise LivenessError(INTERNAL_ERROR, "The session is too busy; try again.")

    async def attach_challenge(self, grant: Grant, challenge_session_id: str) -> None:
        await self._change(grant, lambda a: {**a, "challenge_session_id": challenge_session_id})

    async def record_sample(self, grant: Grant, verify: dict[str, Any]) -> None:
        """One challenge frame's verification: the attempt keeps the similarities (numbers only)."""
        def add(a: dict[str, Any]) -> dict[str, Any]:
            return {**a, "verify_samples": [*a.get("verify_samples", []), verify["match_confidence"]]}

        await self._change(grant, add)

    async def chain_digest(self, grant: Grant, frame_sha256: bytes) -> None:
        """A challenge attempt's digest covers every frame in order: sha256(previous || frame)."""
        def chain(a: dict[str, Any]) -> dict[str, Any]:
            prev = bytes.fromhex(a.get("frames_sha256", "")) if a.get("frames_sha256") else b""
            return {**a, "frames_sha256": hashlib.sha256(prev + frame_sha256).hexdigest()}

        await self._change(grant, chain)

    async def attempt(self, grant: Grant) -> dict[str, Any]:
        """The grant's attempt as stored ({} once deleted): its verify samples, its frame digest chain."""
        rec = await asyncio.to_thread(self.store.get, grant.session_id)
        return next((a for a in (rec.attempts if rec else []) if a["attempt_id"] == grant.attempt_id), {})

    async def release(self, grant: Grant) -> None:
        """Our failure (5xx): the attempt is given back."""
        try:
            await self._change(grant, lambda a: None)
        except Exception:
            log.warning("could not release a session attempt", exc_info=True)

    async def finish(
        self,
        grant: Grant,
        result: AttemptResult | None = None,
        error: LivenessError | None = None,
        image: tuple[bytes, str] | None = None,
    ) -> dict[str, Any]:
        """Record the attempt's outcome; -> what the client may see (``client_view``)."""
        if error is not None and error.status >= 500:
            await self.release(grant)
            raise error
        latency_ms = (time.perf_counter() - grant.started) * 1000
        now = self.clock()
        record: dict[str, Any]
        if result is not None:
            record = {"status": M.DONE, "result": result.as_dict(latency_ms)}
        else:
            assert error is not None
            record = {"status": M.ERROR, "error": {"code": error.code, "message": error.message},
                      "latency_ms": round(latency_ms, 1)}
        # Per-frame similarities and the digest chain were working data: the result keeps the summary.
        drop = ("verify_samples", "frames_sha256")
        await self._change(grant, lambda a: {k: v for k, v in {**a, **record}.items() if k not in drop})
        if result is None or result.decision != M.REALFACE:
            await self.throttle.record_failure(grant.key_id, grant.params.device_correlation_id, now)
        if image is not None and grant.params.enable_session_image:
            await asyncio.to_thread(self.store.put_image, grant.session_id, grant.attempt_id, image[0], image[1], now,
                                    now + self.settings.session_image_retention_s)
        return self.client_view(grant, record)

    @staticmethod
    def client_view(grant: Grant, record: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"session_id": grant.session_id, "attempt_id": grant.attempt_id, "status": "completed",
                               "attempts_remaining": max(0, grant.params.max_attempts - grant.attempt_id)}
        if grant.params.send_results_to_client:
            if "result" in record:
                out["result"] = record["result"]
            else:
                out["error"] = record["error"]
        return out
