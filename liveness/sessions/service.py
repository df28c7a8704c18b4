"""App-server sessions on the use cases (``liveness.operations``): one object for the edge and the
flows, made of parts with one job each (README "Sessions"):

    the app server's calls (create, read, list, delete, images, purge)   liveness.sessions.crud
    the client's attempts (begin, resume, record, finish, release)        liveness.sessions.attempts
    failed attempts per device_correlation_id                             liveness.sessions.throttle
    face verification against the session's reference                     liveness.sessions.faces
    one attempt per mode, end to end                                      liveness.sessions.flows

The challenge mode's ``ChallengeService`` and the token service (``liveness.tokens``) come in at
construction; the methods below only hand over to the parts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from liveness.detection.base import Face
from liveness.errors import INVALID_REQUEST, LivenessError
from liveness.keys import Credential
from liveness.sessions.attempts import AttemptResult, Attempts, Grant, digest
from liveness.sessions.crud import ParseCreate, SessionCrud
from liveness.sessions.faces import SessionFaces
from liveness.sessions.model import SessionParams, SessionRecord
from liveness.sessions.store import PurgeCounts, SessionStore, open_session_store
from liveness.sessions.throttle import DeviceThrottle
from liveness.settings import Settings
from liveness.tokens import TokenService, token_service

if TYPE_CHECKING:
    from liveness.challenges import ChallengeService
    from liveness.operations import Operations

__all__ = ["AttemptResult", "Grant", "SessionService", "digest", "require_sessions"]


def require_sessions(service: "SessionService | None") -> "SessionService":
    """This worker's session service, or the documented error when sessions are switched off."""
    if service is None:
        raise LivenessError(INVALID_REQUEST, "Sessions are disabled on this server (LIVENESS_SESSIONS_ENABLED).")
    return service


class SessionService:
    def __init__(
        self,
        ops: "Operations",  # LivenessApp
        settings: Settings,
        *,
        challenges: "ChallengeService | None" = None,  # the challenge mode's; None: that mode is unavailable
        store: SessionStore | None = None,
        tokens: TokenService | None = None,  # None: a ring of this service's own stores (liveness.tokens.token_ring)
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ops = ops
        self.admission = ops.admission
        self.settings = settings
        self.store = store or open_session_store(str(settings.db_path), settings.mongodb_uri)
        self.clock = clock
        self.challenges = challenges
        self.tokens = tokens or token_service(settings, keys=self.admission.keys, sessions=self.store, clock=clock)
        self.throttle = DeviceThrottle(self.store, settings, clock)
        self.faces = SessionFaces(ops)
        self.crud = SessionCrud(self.admission, settings, self.store, self.tokens.session, self.throttle, self.faces,
                                clock=clock)
        self.attempts = Attempts(self.admission, settings, self.store, self.tokens.session, self.throttle,
                                 clock=clock, housekeeping=self.crud.maybe_purge)

    # -- the app server (crud) -----------------------------------------------------------------

    async def create(self, credential: Credential, params: SessionParams | ParseCreate,
                     reference: bytes | None = None) -> dict[str, Any]:
        return await self.crud.create(credential, params, reference)

    async def get(self, credential: Credential, session_id: Any) -> dict[str, Any]:
        return await self.crud.get(credential, session_id)

    async def list(self, credential: Credential, limit: int, *, full: bool = False) -> dict[str, Any]:
        return await self.crud.list(credential, limit, full=full)

    async def audit(self, credential: Credential, session_id: Any) -> dict[str, Any]:
        return await self.crud.audit(credential, session_id)

    async def delete(self, credential: Credential, session_id: Any) -> None:
        await self.crud.delete(credential, session_id)

    async def image(self, credential: Credential, session_id: Any, attempt_id: int) -> tuple[bytes, str]:
        return await self.crud.image(credential, session_id, attempt_id)

    def view(self, rec: SessionRecord, now: float) -> dict[str, Any]:
        return self.crud.view(rec, now)

    async def maybe_purge(self) -> None:
        await self.crud.maybe_purge()

    def purge(self, now: float | None = None) -> PurgeCounts:
        return self.crud.purge(now)

    # -- the client's attempts -----------------------------------------------------------------

    async def begin(self, token: str, family: str) -> Grant:
        return await self.attempts.begin(token, family)

    async def resume(self, token: str, challenge_session_id: Any) -> Grant:
        return await self.attempts.resume(token, challenge_session_id)

    async def attach_challenge(self, grant: Grant, challenge_session_id: str) -> None:
        await self.attempts.attach_challenge(grant, challenge_session_id)

    async def record_sample(self, grant: Grant, verify: dict[str, Any]) -> None:
        await self.attempts.record_sample(grant, verify)

    async def chain_digest(self, grant: Grant, frame_sha256: bytes) -> None:
        await self.attempts.chain_digest(grant, frame_sha256)

    async def attempt(self, grant: Grant) -> dict[str, Any]:
        return await self.attempts.attempt(grant)

    async def release(self, grant: Grant) -> None:
        await self.attempts.release(grant)

    async def finish(self, grant: Grant, result: AttemptResult | None = None, error: LivenessError | None = None,
                     image: tuple[bytes, str] | None = None) -> dict[str, Any]:
        return await self.attempts.finish(grant, result, error, image)

    def client_view(self, grant: Grant, record: dict[str, Any]) -> dict[str, Any]:
        return self.attempts.client_view(grant, record)

    # -- face verification ---------------------------------------------------------------------

    async def reference(self, image: bytes, key_id: str) -> tuple[bytes, dict[str, Any], int]:
        return await self.faces.reference(image, key_id)

    async def verify_probe(self, grant: Grant, bgr: np.ndarray, target: Face | None) -> dict[str, Any] | None:
        return await self.faces.probe(grant, bgr, target)

    def verify_models(self, key_id: str) -> list[dict[str, Any]]:
        return self.faces.models(key_id)

    def close(self) -> None:
        self.store.close()
