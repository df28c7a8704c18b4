"""App-server sessions on the use cases (``liveness.operations``): create, read, list, delete; the
client's attempts (begin, finish) and face verification against the session's reference.

Rules (README "Sessions"):

* The app server's API key creates, reads, lists and deletes; another key's session id answers
  ``session_not_found`` (404), never 403, so ids cannot be probed.
* Creating a session charges ONE quota unit, after its parameters (and, in ``*-verify`` modes,
  the reference image) proved valid.  The client's attempts are ``Prepaid``: never charged.
* An attempt is reserved before any model work (compare-and-set on the session row, so
  ``max_attempts`` holds across workers) and recorded with its result or its input error;
  an error of ours (5xx) gives the attempt back.  A ``realface`` result ends the session.
* Failed attempts (``spoofface`` or an input error) count per ``device_correlation_id``:
  ``session_throttle_failures`` within ``session_throttle_window_s`` block new attempts and new
  sessions of that device for ``session_throttle_cooldown_s``.
* Reference embeddings live in the session row only until it expires or is deleted.  Images
  are stored only for sessions created with ``enable_session_image`` and only for
  ``session_image_retention_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from liveness.detection.base import Face
from liveness.errors import (
    ATTEMPTS_EXHAUSTED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    INVALID_SESSION_TOKEN,
    MISSING_IMAGE,
    SESSION_COMPLETED,
    SESSION_NOT_FOUND,
    SESSION_TOKEN_EXPIRED,
    TOKEN_MODE_MISMATCH,
    TOO_MANY_FAILED_ATTEMPTS,
    LivenessError,
)
from liveness.keys import Credential, Prepaid
from liveness.sessions import model as M
from liveness.sessions.model import SessionParams, SessionRecord, iso
from liveness.sessions.store import PurgeCounts, SessionStore, open_session_store
from liveness.sessions.tokens import SessionTokens
from liveness.settings import Settings

if TYPE_CHECKING:
    from liveness.challenges import ChallengeService
    from liveness.operations import Operations

log = logging.getLogger("liveness.sessions")

def require_sessions(service: "SessionService | None") -> "SessionService":
    """This worker's session service, or the documented error when sessions are switched off."""
    if service is None:
        raise LivenessError(INVALID_REQUEST, "Sessions are disabled on this server (LIVENESS_SESSIONS_ENABLED).")
    return service


CAS_RETRIES = 8


def _not_found() -> LivenessError:
    return LivenessError(SESSION_NOT_FOUND, "No such session for this API key.")


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


class SessionService:
    def __init__(
        self,
        ops: "Operations",  # LivenessApp
        settings: Settings,
        *,
        store: SessionStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ops = ops
        self.admission = ops.admission
        self.settings = settings
        self.store = store or open_session_store(str(settings.db_path), settings.mongodb_uri)
        self.clock = clock
        self.challenges: "ChallengeService | None" = None  # wired by the front end (challenge mode)
        configured = [s.encode("utf-8") for s in settings.session_token_secrets if s]
        self.tokens = SessionTokens(configured or [self.store.token_secret()])
        self._last_purge = 0.0

    # -- helpers -------------------------------------------------------------------------------

    async def _own(self, key_id: str, session_id: Any) -> SessionRecord:
        if not isinstance(session_id, str) or not session_id:
            raise _not_found()
        rec = await asyncio.to_thread(self.store.get, session_id)
        if rec is None or not secrets.compare_digest(rec.key_id, key_id):
            raise _not_found()
        return rec

    async def maybe_purge(self) -> None:
        now = self.clock()
        if now - self._last_purge < self.settings.session_purge_interval_s:
            return
        self._last_purge = now
        try:
            counts = await asyncio.to_thread(self.purge, now)
            if any(counts.as_dict().values()):
                log.info("session purge: %s", counts.as_dict())
        except Exception:
            log.warning("session purge failed", exc_info=True)

    def purge(self, now: float | None = None) -> PurgeCounts:
        s = self.settings
        return self.store.purge(self.clock() if now is None else now, s.session_retention_s,
                                s.session_throttle_window_s + s.session_throttle_cooldown_s)

    async def _throttle(self, key_id: str, device: str | None, now: float) -> None:
        if not device:
            return
        s = self.settings
        n, last = await asyncio.to_thread(
            self.store.failures_since, key_id, device, now - s.session_throttle_window_s - s.session_throttle_cooldown_s
        )
        if last is None or n < s.session_throttle_failures or now >= last + s.session_throttle_cooldown_s:
            return
        # The cool-down runs from the latest failure of a burst that reached the limit in one window.
        burst, _ = await asyncio.to_thread(self.store.failures_since, key_id, device, last - s.session_throttle_window_s)
        if burst >= s.session_throttle_failures:
            retry = int(last + s.session_throttle_cooldown_s - now) + 1
            raise LivenessError(
                TOO_MANY_FAILED_ATTEMPTS,
                f"Too many failed attempts from this device; try again in {retry} s.",
                {"retry_after": retry},
            )

    async def _versions(self, key_id: str) -> dict[str, int]:
        return dict((await self.admission.route(key_id)).primary)

    # -- face verification ---------------------------------------------------------------------

    async def reference(self, image: bytes, key_id: str) -> tuple[bytes, dict[str, Any], int]:
        """A reference image -> (embedding bytes, verify_image info).  NO_FACE / MULTIPLE_FACES
        name the field; nothing about the image is kept but the embedding."""
        verifier = self.ops.require_verifier()
        try:
            template = await verifier.reference(await self.ops.decode_bgr(image), await self._versions(key_id))
        except LivenessError as e:
            e.details.setdefault("field", "verify_image")
            raise
        return np.asarray(template.embedding, np.float32).tobytes(), template.describe(), int(template.model.version)

    async def verify_probe(self, grant: Grant, bgr: np.ndarray, target: Face | None) -> dict[str, Any] | None:
        """The live face against the session's reference: {is_identical, match_confidence} (with
        ``reason`` when the verifier finds no face where the liveness check found one); None
        without a reference."""
        if grant.reference is None:
            return None
        verifier = self.ops.require_verifier()
        versions = await self._versions(grant.key_id)
        if grant.reference_version is not None:
            versions[verifier.model_names[-1]] = grant.reference_version
        probe = await verifier.probe(bgr, versions, target)
        if probe is None:
            return {"is_identical": False, "match_confidence": 0.0, "reason": "no_face_for_recognition"}
        ref = np.frombuffer(grant.reference, np.float32)
        r = verifier.match(ref, probe.embedding)
        return {"is_identical": bool(r.is_identical), "match_confidence": round(float(r.match_confidence), 4)}

    def verify_models(self, key_id: str) -> list[dict[str, Any]]:
        return self.ops.recognition_versions(self.admission.route_now(key_id).primary)

    # -- app server ----------------------------------------------------------------------------

    async def create(self, credential: Credential, params: SessionParams, reference: bytes | None) -> dict[str, Any]:
        async with self.admission.admit(credential) as ctx:
            key_id = ctx.key_id
            await self.maybe_purge()
            now = self.clock()
            if params.verify and not reference:
                raise LivenessError(MISSING_IMAGE, f"Mode '{params.mode}' needs a reference image in 'verify_image'.",
                                    {"field": "verify_image"})
            if reference and not params.verify:
                raise LivenessError(INVALID_REQUEST, "'verify_image' is only accepted with a '*-verify' mode.",
                                    {"field": "verify_image"})
            await self._throttle(key_id, params.device_correlation_id, now)
            embedding, verify_image, version = (await self.reference(reference, key_id)) if reference else (None, None, None)
            rec = SessionRecord(
                session_id=secrets.token_urlsafe(24), key_id=key_id, params=params, created_at=now,
                expires_at=now + params.auth_token_ttl_seconds, reference=embedding, verify_image=verify_image,
                state={"attempts": [], "reference_version": version},
            )
            await ctx.input_valid()  # parameters and reference valid: one unit, once; refunded if the insert fails
            await asyncio.to_thread(self.store.create, rec)
        out: dict[str, Any] = {
            "session_id": rec.session_id,
            "auth_token": self.tokens.issue(rec.session_id, params.mode, now, params.auth_token_ttl_seconds),
            "mode": params.mode,
            "expires_at": iso(rec.expires_at),
        }
        if verify_image is not None:
            out["verify_image"] = verify_image
        return out

    def view(self, rec: SessionRecord, now: float) -> dict[str, Any]:
        p = rec.params
        # A challenge attempt cannot outlive its challenge session; nothing else runs that long.
        limit_s = self.settings.challenge_session_ttl_s + self.settings.video_decode_timeout_s
        attempts = [
            {k: v for k, v in M.settled(a, now, rec.expired(now), limit_s).items()
             if k in ("attempt_id", "status", "received_at", "result", "error")}
            for a in rec.attempts
        ]
        latest = next((a["result"] for a in reversed(rec.attempts) if a.get("result")), None)
        out: dict[str, Any] = {
            "session_id": rec.session_id,
            "status": rec.status(now),
            "mode": p.mode,
            "created_at": iso(rec.created_at),
            "expires_at": iso(rec.expires_at),
            "auth_token_ttl_seconds": p.auth_token_ttl_seconds,
            "session_expired": rec.expired(now),
            "device_correlation_id": p.device_correlation_id,
            "send_results_to_client": p.send_results_to_client,
            "enable_session_image": p.enable_session_image,
            "max_attempts": p.max_attempts,
            "attempts_used": len(rec.attempts),
            "attempts": attempts,
            "result": latest,
        }
        if rec.verify_image is not None:
            out["verify_image"] = rec.verify_image
        return out

    async def get(self, credential: Credential, session_id: Any) -> dict[str, Any]:
        key_id = await self.admission.identify(credential)
        await self.maybe_purge()
        return self.view(await self._own(key_id, session_id), self.clock())

    async def list(self, credential: Credential, limit: int) -> dict[str, Any]:
        key_id = await self.admission.identify(credential)
        limit = max(1, min(int(limit), self.settings.session_list_max))
        recs = await asyncio.to_thread(self.store.list, key_id, limit)
        now = self.clock()
        return {"sessions": [
            {k: v for k, v in self.view(r, now).items() if k not in ("attempts", "verify_image")} for r in recs
        ]}

    async def delete(self, credential: Credential, session_id: Any) -> None:
        key_id = await self.admission.identify(credential)
        rec = await self._own(key_id, session_id)
        await asyncio.to_thread(self.store.delete, rec.session_id)

    async def image(self, credential: Credential, session_id: Any, attempt_id: int) -> tuple[bytes, str]:
        key_id = await self.admission.identify(credential)
        rec = await self._own(key_id, session_id)
        found = await asyncio.to_thread(self.store.get_image, rec.session_id, attempt_id, self.clock())
        if found is None:
            raise LivenessError(SESSION_NOT_FOUND, "No stored image for this attempt (none kept, or past retention).")
        return found

    # -- client attempts -------------------------------------------------------------------------

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

    async def begin(self, token: str, family: str) -> Grant:
        """Reserve one attempt of the token's session, before any model work."""
        rec = await self._session_for(token, family)
        await self.maybe_purge()
        for _ in range(CAS_RETRIES):
            now = self.clock()
            if rec.passed():
                raise LivenessError(SESSION_COMPLETED, "This session already has a realface result.")
            if len(rec.attempts) >= rec.params.max_attempts:
                raise LivenessError(ATTEMPTS_EXHAUSTED, f"All {rec.params.max_attempts} attempts of this session are used.")
            await self._throttle(rec.key_id, rec.params.device_correlation_id, now)
            attempt_id = max((a["attempt_id"] for a in rec.attempts), default=0) + 1
            state = {**rec.state, "attempts": [*rec.attempts, {"attempt_id": attempt_id, "status": M.RUNNING,
                                                                 "received_at": iso(now)}]}
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

    async def _change_attempt(self, grant: Grant, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
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
        await self._change_attempt(grant, lambda a: {**a, "challenge_session_id": challenge_session_id})

    async def record_sample(self, grant: Grant, verify: dict[str, Any]) -> None:
        """One challenge frame's verification: the attempt keeps the similarities (numbers only)."""
        def add(a: dict[str, Any]) -> dict[str, Any]:
            return {**a, "verify_samples": [*a.get("verify_samples", []), verify["match_confidence"]]}

        await self._change_attempt(grant, add)

    async def chain_digest(self, grant: Grant, frame_sha256: bytes) -> None:
        """A challenge attempt's digest covers every frame in order: sha256(previous || frame)."""
        def chain(a: dict[str, Any]) -> dict[str, Any]:
            prev = bytes.fromhex(a.get("frames_sha256", "")) if a.get("frames_sha256") else b""
            return {**a, "frames_sha256": hashlib.sha256(prev + frame_sha256).hexdigest()}

        await self._change_attempt(grant, chain)

    async def attempt(self, grant: Grant) -> dict[str, Any]:
        """The grant's attempt as stored ({} once deleted): its verify samples, its frame digest chain."""
        rec = await asyncio.to_thread(self.store.get, grant.session_id)
        return next((a for a in (rec.attempts if rec else []) if a["attempt_id"] == grant.attempt_id), {})

    async def release(self, grant: Grant) -> None:
        """Our failure (5xx): the attempt is given back."""
        try:
            await self._change_attempt(grant, lambda a: None)
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
        await self._change_attempt(grant, lambda a: {k: v for k, v in {**a, **record}.items() if k not in drop})
        failed = result is None or result.decision != M.REALFACE
        if failed and grant.params.device_correlation_id:
            await asyncio.to_thread(self.store.record_failure, grant.key_id, grant.params.device_correlation_id, now)
        if image is not None and grant.params.enable_session_image:
            await asyncio.to_thread(self.store.put_image, grant.session_id, grant.attempt_id, image[0], image[1], now,
                                    now + self.settings.session_image_retention_s)
        return self.client_view(grant, record)

    def client_view(self, grant: Grant, record: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"session_id": grant.session_id, "attempt_id": grant.attempt_id, "status": "completed",
                               "attempts_remaining": max(0, grant.params.max_attempts - grant.attempt_id)}
        if grant.params.send_results_to_client:
            if "result" in record:
                out["result"] = record["result"]
            else:
                out["error"] = record["error"]
        return out

    def close(self) -> None:
        self.store.close()
