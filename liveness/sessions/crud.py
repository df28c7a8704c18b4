"""The app server's side of sessions (README "Sessions"): create, read, list, delete, the stored
images, and the periodic purge.

* The app server's API key creates, reads, lists and deletes; another key's session id answers
  ``session_not_found`` (404), never 403, so ids cannot be probed.
* Creating a session charges ONE quota unit, after its parameters (and, in ``*-verify`` modes,
  the reference image) proved valid; a throttled device (``DeviceThrottle``) cannot create one.
* Reference embeddings live in the session row only until it expires or is deleted.  Images
  are stored only for sessions created with ``enable_session_image`` and only for
  ``session_image_retention_s``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from liveness.errors import INVALID_REQUEST, MISSING_IMAGE, SESSION_NOT_FOUND, LivenessError
from liveness.keys import Credential
from liveness.sessions import model as M
from liveness.sessions.faces import SessionFaces
from liveness.sessions.model import SessionParams, SessionRecord, iso
from liveness.sessions.store import PurgeCounts, SessionStore
from liveness.sessions.throttle import DeviceThrottle
from liveness.settings import Settings
from liveness.tokens import SessionTokens

if TYPE_CHECKING:
    from liveness.admission import Admission

log = logging.getLogger("liveness.sessions")

# A create request parsed only once its key is admitted: () -> (params, reference image or None).
ParseCreate = Callable[[], "tuple[SessionParams, bytes | None]"]


def _not_found() -> LivenessError:
    return LivenessError(SESSION_NOT_FOUND, "No such session for this API key.")


@dataclass(eq=False)
class SessionCrud:
    admission: "Admission"
    settings: Settings
    store: SessionStore
    tokens: SessionTokens
    throttle: DeviceThrottle
    faces: SessionFaces
    _: KW_ONLY
    clock: Callable[[], float]
    _last_purge: float = field(default=0.0, init=False)

    async def _own(self, key_id: str, session_id: Any) -> SessionRecord:
        if not isinstance(session_id, str) or not session_id:
            raise _not_found()
        rec = await asyncio.to_thread(self.store.get, session_id)
        if rec is None or not secrets.compare_digest(rec.key_id, key_id):
            raise _not_found()
        return rec

    # -- purge ---------------------------------------------------------------------------------

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
        return self.store.purge(self.clock() if now is None else now, self.settings.session_retention_s,
                                self.throttle.keep_s)

    # -- the app server's calls ----------------------------------------------------------------

    async def create(self, credential: Credential, params: SessionParams | ParseCreate,
                     reference: bytes | None = None) -> dict[str, Any]:
        """``params`` may be a callable parsing the request into (params, reference): it runs once
        the key is admitted (once), so a refused key costs no parsing."""
        async with self.admission.admit(credential) as ctx:
            if callable(params):
                params, reference = params()
            key_id = ctx.key_id
            await self.maybe_purge()
            now = self.clock()
            if params.verify and not reference:
                raise LivenessError(MISSING_IMAGE, f"Mode '{params.mode}' needs a reference image in 'verify_image'.",
                                    {"field": "verify_image"})
            if reference and not params.verify:
                raise LivenessError(INVALID_REQUEST, "'verify_image' is only accepted with a '*-verify' mode.",
                                    {"field": "verify_image"})
            await self.throttle.check(key_id, params.device_correlation_id, now)
            embedding, verify_image, version = (await self.faces.reference(reference, key_id)) if reference else (None, None, None)
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
        key_id = await self.admission.owner(credential)
        await self.maybe_purge()
        return self.view(await self._own(key_id, session_id), self.clock())

    async def list(self, credential: Credential, limit: int, *, full: bool = False) -> dict[str, Any]:
        """The key's sessions, newest first; ``full``: each with its attempts and verify image too."""
        key_id = await self.admission.owner(credential)
        limit = max(1, min(int(limit), self.settings.session_list_max))
        recs = await asyncio.to_thread(self.store.list, key_id, limit)
        now = self.clock()
        drop = () if full else ("attempts", "verify_image")
        return {"sessions": [{k: v for k, v in self.view(r, now).items() if k not in drop} for r in recs]}

    async def audit(self, credential: Credential, session_id: Any) -> dict[str, Any]:
        """``get``'s view, each attempt with the ``request`` its adapter recorded (``Attempts.begin``)
        and its latency: what an API with an audit trail (Azure Face's audit entries) answers."""
        key_id = await self.admission.owner(credential)
        rec = await self._own(key_id, session_id)
        now = self.clock()
        limit_s = self.settings.challenge_session_ttl_s + self.settings.video_decode_timeout_s
        keep = ("attempt_id", "status", "received_at", "result", "error", "request", "latency_ms")
        attempts = [{k: v for k, v in M.settled(a, now, rec.expired(now), limit_s).items() if k in keep}
                    for a in rec.attempts]
        return {**self.view(rec, now), "attempts": attempts}

    async def delete(self, credential: Credential, session_id: Any) -> None:
        key_id = await self.admission.owner(credential)
        rec = await self._own(key_id, session_id)
        await asyncio.to_thread(self.store.delete, rec.session_id)

    async def image(self, credential: Credential, session_id: Any, attempt_id: int) -> tuple[bytes, str]:
        key_id = await self.admission.owner(credential)
        rec = await self._own(key_id, session_id)
        found = await asyncio.to_thread(self.store.get_image, rec.session_id, attempt_id, self.clock())
        if found is None:
            raise LivenessError(SESSION_NOT_FOUND, "No stored image for this attempt (none kept, or past retention).")
        return found
