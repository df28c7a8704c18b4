"""Active challenge sessions on the use cases (``liveness.operations``): start, frames, complete,
status, stats.

Field names and types follow the Flask/MediaPipe service this replaces (Liveness_service's
``liveness_server.py``: success, session_id, instruction, current_step, total_steps,
expires_in_minutes (int), face_detected, step_completed, verification_complete,
verification_failed, verification_time, steps_completed, total_blinks, timestamp, verified_image,
verified_image_path, created_at, completed), plus ours (challenge, reason, passive_score,
model_versions, verdict, result_token, ...).  ``success`` is true on every answer, except the
verdict's, where it means what it meant there: the liveness check passed (that service refused
``/complete`` for any session that had not passed, so its clients read ``success`` as the verdict).

Rules (README "Active challenges"):

* Sessions are bound to the API key that started them: another key gets ``session_not_found``.
  Ids are ``secrets.token_urlsafe(24)``.  Timestamps come from the server clock.
* Every frame runs the passive pipeline; the verdict needs the session's mean fused score
  >= ``threshold`` (over at least ``challenge_min_passive_frames`` face frames), every step
  done, and no hard failure (step timeout, face lost > ``challenge_face_missing_s``, identity
  jump - see identity.py).
* Frames are metered at ``challenge_max_fps`` on average (a token bucket of ``FRAME_BURST`` frames,
  so one frame may come early after a late one); a frame over the budget gets ``frame_too_fast``:
  not charged, session unchanged.
* Quota: ONE unit per session, charged at ``start`` (refunded if the session cannot be stored
  or a limit refuses it).  It buys the verdict and at most ``challenge_max_frames`` scored frames
  (then ``session_finished``, reason ``frame_limit``), so a key can never get more frame scores
  than it paid for; frames and ``complete`` only check the key.  An app-server session's
  challenge is paid by its session (``Prepaid``).
* Limits: ``challenge_max_sessions`` live sessions in all (503 ``too_many_sessions``), and per API
  key ``challenge_max_sessions_per_key`` live and ``challenge_sessions_per_key_per_minute`` started
  in any 60 s (429 ``key_session_limit``), so one key cannot fill the pool for the others.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import numpy as np

from liveness.admission import Admitted
from liveness.challenges import steps as S
from liveness.challenges.identity import colour_hist, identity_crop
from liveness.challenges.store import SessionLimits, SessionRow, SessionStore, open_session_store
from liveness.detection.base import Face
from liveness.errors import (
    FRAME_TOO_FAST,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    SESSION_EXPIRED,
    SESSION_FINISHED,
    SESSION_NOT_FOUND,
    LivenessError,
)
from liveness.keys import Credential
from liveness.landmarks.signals import FaceSignals
from liveness.settings import Settings
from liveness.tokens import TokenService, token_service
from liveness.tokens import verify_result_token as verify_result_token  # public here: customers verify result tokens

if TYPE_CHECKING:
    from liveness.operations import Operations

log = logging.getLogger("liveness.challenges")

Measure = Callable[["Operations", np.ndarray, Face, dict[str, int]], Awaitable[FaceSignals]]
FrameHook = Callable[[np.ndarray, Face], Awaitable[None]]
# Frames are metered by a token bucket refilled at challenge_max_fps and holding FRAME_BURST frames:
# the average rate is capped, but one frame may arrive early after a late one (client timers,
# network and server-queue jitter shift single arrivals by tens of ms).  Two frames at once, or a
# steady stream above the cap, are still refused.
FRAME_BURST = 1.5
MAX_CHOSEN = 8  # challenges an admin may choose for one session
CAS_RETRIES = 8


def default_measure() -> Measure | None:
    try:
        from liveness.landmarks.measure import measure_face  # the landmark models (facemesh, iris)
    except ImportError:
        return None
    return measure_face


def iso_time(t: float) -> str:
    """Epoch seconds as ISO 8601 (UTC, seconds): Liveness_service's ``timestamp`` / ``created_at``."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _not_found() -> LivenessError:
    return LivenessError(SESSION_NOT_FOUND, "No such challenge session for this API key.")


def chosen_challenges(value: Any) -> list[str]:
    """The one check of a caller's choice of challenges: ``ChallengeService.start`` runs it for
    every start (HTTP, WebSocket, Socket.IO); the WebSocket also runs it on its start message."""
    if (not isinstance(value, list) or not 1 <= len(value) <= MAX_CHOSEN
            or not all(isinstance(c, str) and c in S.CHALLENGES for c in value)):
        raise LivenessError(INVALID_REQUEST, f"'challenges' must be a list of 1-{MAX_CHOSEN} of: {', '.join(S.CHALLENGES)}.")
    return list(value)


def refuse_choice_by_session_token(chosen: bool) -> None:
    """An app-server session's challenges are drawn by the server: its token chooses none (nor
    sends admin options)."""
    if chosen:
        raise LivenessError(INVALID_REQUEST, "A session token cannot choose challenges.")


class ChallengeService:
    def __init__(
        self,
        ops: "Operations",  # LivenessApp
        settings: Settings,
        *,
        store: SessionStore | None = None,
        measure: Measure | None | bool = True,  # True = liveness.landmarks.measure.measure_face
        clock: Callable[[], float] = time.time,
        thresholds: S.Thresholds = S.Thresholds(),
        tokens: TokenService | None = None,  # None: a ring of this service's own stores, built when first needed
    ) -> None:
        self.ops = ops
        self.admission = ops.admission
        self.settings = settings
        self.store = store or open_session_store(str(settings.db_path), settings.mongodb_uri)
        self.measure = default_measure() if measure is True else (measure or None)
        if self.measure is None:
            log.warning("landmark measurement unavailable: challenge steps cannot complete (passive checks still run)")
        self.clock = clock
        self.thresholds = thresholds
        self.limits = S.Limits(
            step_timeout_s=settings.challenge_step_timeout_s,
            face_missing_s=settings.challenge_face_missing_s,
            max_center_jump=settings.challenge_max_center_jump,
            min_area_ratio=settings.challenge_min_area_ratio,
            min_appearance=settings.challenge_min_appearance,
        )
        pool = [c for c in settings.challenge_pool if c in S.CHALLENGES]
        if not pool:
            raise ValueError(f"challenge_pool has no known challenge; known: {', '.join(S.CHALLENGES)}")
        self.pool = pool
        self._rng = secrets.SystemRandom()
        self._last_purge = 0.0
        self._tokens = tokens
        self._measure_failed_logged = False

    # -- helpers -------------------------------------------------------------------------------

    async def _maybe_purge(self, now: float) -> None:
        if now - self._last_purge < self.settings.challenge_purge_interval_s:
            return
        self._last_purge = now
        try:
            n = await asyncio.to_thread(self.store.purge, now - self.settings.challenge_purge_grace_s)
            if n:
                log.info("purged %d expired challenge sessions", n)
        except Exception:
            log.warning("challenge session purge failed", exc_info=True)

    async def _load(self, key_id: str, session_id: Any, now: float) -> SessionRow:
        if not isinstance(session_id, str) or not session_id:
            raise LivenessError(INVALID_REQUEST, "'session_id' (a string) is required.")
        row = await asyncio.to_thread(self.store.get, session_id)
        if row is None or not secrets.compare_digest(row.key_id, key_id):
            raise _not_found()
        if row.status != S.COMPLETED and now >= row.expires_at:
            raise LivenessError(SESSION_EXPIRED, "The challenge session has expired; start a new one.")
        return row

    def _draw(self) -> list[str]:
        n = self.settings.challenge_steps
        if n <= len(self.pool):
            return self._rng.sample(self.pool, n)
        return [self._rng.choice(self.pool) for _ in range(n)]

    @property
    def tokens(self) -> TokenService:
        """The token service result tokens are signed with (``liveness.tokens``)."""
        if self._tokens is None:
            self._tokens = token_service(self.settings, keys=self.admission.keys, challenges=self.store, clock=self.clock)
        return self._tokens

    def _progress(self, row: SessionRow, now: float) -> dict[str, Any]:
        st = row.state
        total = len(st["steps"])
        return {
            "success": True,
            "session_id": row.session_id,
            "current_step": min(st["index"] + 1, total),
            "total_steps": total,
            "steps_completed": st["index"],
            "challenge": S.current_challenge(st),
            "expires_in_seconds": max(0, round(row.expires_at - now, 1)),
        }

    # -- API -----------------------------------------------------------------------------------

    async def start(
        self, credential: Credential, challenges: list[str] | None = None, admin: bool = False, *, keep_frame: bool = False
    ) -> dict[str, Any]:
        """Charged ONE unit (the session's price: its verdict and at most ``challenge_max_frames``
        scored frames), refunded if the session cannot be stored or a session limit refuses it.
        ``keep_frame``: keep the best frame for this session (an app-server session created with
        ``enable_session_image``), as ``challenge_return_frame`` does for all."""
        async with self.admission.admit(credential) as ctx:
            return await self._start(ctx, challenges, admin, keep_frame)

    async def _start(self, ctx: Admitted, challenges: list[str] | None, admin: bool, keep_frame: bool) -> dict[str, Any]:
        key_id = ctx.key_id
        now = self.clock()
        await self._maybe_purge(now)
        if challenges is not None:
            if not admin:
                raise LivenessError(INVALID_REQUEST, "'challenges' may only be chosen with a valid X-Admin-Key.")
            steps = chosen_challenges(challenges)
        else:
            steps = self._draw()
        ttl = self.settings.challenge_session_ttl_s
        row = SessionRow(
            session_id=secrets.token_urlsafe(24), key_id=key_id, created_at=now, expires_at=now + ttl,
            status=S.ACTIVE, version=0, state={**S.new_state(steps, now), **({"keep_frame": True} if keep_frame else {})},
        )
        await ctx.input_valid()  # a valid start: the session's one unit (refunded if not stored)
        await asyncio.to_thread(self.store.create, row, self._limits(ctx), now)
        return {
            "success": True,
            "session_id": row.session_id,
            "instruction": S.instruction(row.state),
            "challenge": steps[0],
            "current_step": 1,
            "total_steps": len(steps),
            "expires_in_minutes": int(ttl // 60),  # an int, as Liveness_service's; expires_at is exact
            "expires_at": row.expires_at,
            "step_timeout_seconds": self.settings.challenge_step_timeout_s,
            "max_fps": self.settings.challenge_max_fps,
        }

    def _limits(self, ctx: Admitted) -> SessionLimits:
        """The server-wide cap for everyone; per-key caps for API-key callers (an app-server
        session's challenge is bounded by its own ``max_attempts``)."""
        s = self.settings
        if ctx.prepaid or ctx.key is None:
            return SessionLimits(s.challenge_max_sessions)
        return SessionLimits(s.challenge_max_sessions, s.challenge_max_sessions_per_key,
                             s.challenge_sessions_per_key_per_minute)

    def _frame_budget(self, state: dict[str, Any], now: float) -> float:
        """Frames the session may send at ``now`` (token bucket; see FRAME_BURST)."""
        last = state.get("last_frame")
        if last is None:
            return FRAME_BURST
        tokens = state.get("frame_tokens", FRAME_BURST - 1.0)
        return min(FRAME_BURST, tokens + max(0.0, now - last) * self.settings.challenge_max_fps)

    def _too_fast(self, state: dict[str, Any], now: float) -> LivenessError | None:
        budget = self._frame_budget(state, now)
        if budget < 1.0:
            wait_s = (1.0 - budget) / self.settings.challenge_max_fps
            return LivenessError(
                FRAME_TOO_FAST,
                f"Frames may come at most {self.settings.challenge_max_fps:g} per second.",
                {"retry_after_ms": int(wait_s * 1000) + 1},
            )
        return None

    @staticmethod
    def _check_open(row: SessionRow) -> None:
        if row.status not in (S.ACTIVE, S.STEPS_DONE):
            raise LivenessError(
                SESSION_FINISHED, f"The challenge session is {row.status}; call complete or start a new one.",
                {"status": row.status, "reason": row.state.get("reason")},
            )

    def _check_frames_left(self, row: SessionRow) -> None:
        limit = self.settings.challenge_max_frames
        if row.state["frames"] >= limit:
            raise LivenessError(
                SESSION_FINISHED, f"The challenge session has scored its {limit} frames; call complete.",
                {"status": row.status, "reason": "frame_limit", "max_frames": limit},
            )

    def _keep_frame(self, state: dict[str, Any]) -> bool:
        return self.settings.challenge_return_frame or bool(state.get("keep_frame"))

    async def process(
        self,
        credential: Credential,
        session_id: str,
        frame: bytes | Callable[[], bytes],
        frame_hook: FrameHook | None = None,
    ) -> dict[str, Any]:
        """``frame_hook(bgr, face)`` runs on every frame with a face (face verification of an
        app-server session) before the session is updated."""
        now = self.clock()  # the frame's timestamp: arrival on the server, before any I/O
        key_id = await self.admission.owner(credential)  # frames were paid for at start
        await self._maybe_purge(now)
        row = await self._load(key_id, session_id, now)
        self._check_open(row)
        self._check_frames_left(row)
        if (err := self._too_fast(row.state, now)) is not None:
            raise err
        obs, versions, bgr = await self._measure(frame, key_id)
        if frame_hook is not None and obs.box is not None:
            await frame_hook(bgr, Face(*obs.box, score=1.0))
        best_frame = None
        for _ in range(CAS_RETRIES):
            state = _copy(row.state)
            self._check_frames_left(row)
            if (err := self._too_fast(state, now)) is not None:  # another frame landed meanwhile
                raise err
            state["frame_tokens"] = self._frame_budget(state, now) - 1.0
            event = S.advance(state, obs, now, self.limits, self.thresholds)
            changes: dict[str, Any] = {}
            if self._keep_frame(state) and obs.box is not None and obs.passive is not None:
                if state["best_score"] is None or obs.passive > state["best_score"]:
                    state["best_score"] = obs.passive
                    if best_frame is None:
                        best_frame = await self.ops.cpu(_jpeg_b64, bgr)
                    changes["best_frame"] = best_frame
            new = row.with_state(state, **changes)
            if await asyncio.to_thread(self.store.update, new):
                break
            row = await self._load(key_id, session_id, now)  # lost a race with another worker: re-apply
            self._check_open(row)
        else:
            raise LivenessError(INTERNAL_ERROR, "The challenge session is too busy; send the frame again.")
        mean = S.passive_mean(state)
        out = {
            **self._progress(new, now),
            "face_detected": obs.box is not None,
            "instruction": S.instruction(state, obs.box is not None),
            "step_completed": event.step_completed,
            "completed_step": event.completed_step,
            "verification_complete": state["status"] == S.STEPS_DONE,
            "verification_failed": state["status"] == S.FAILED,
            "reason": state["reason"],
            "frame_score": None if obs.passive is None else round(obs.passive, 6),
            "passive_score": None if mean is None else round(mean, 6),
            "model_versions": versions,
        }
        if obs.signals is None and obs.box is not None and self.measure is None:
            out["warning"] = "landmarks_unavailable"
        return out

    async def _measure(self, frame: bytes | Callable[[], bytes], key_id: str) -> tuple[S.Observation, dict[str, int], np.ndarray]:
        bgr = await self.ops.decode_bgr(frame)  # bad input: LivenessError
        versions = dict((await self.admission.route(key_id)).primary)
        try:
            scored = await self.ops.score_frame(bgr, versions)  # uncharged
        except LivenessError:
            raise
        except Exception as e:
            log.exception("challenge frame classification failed")
            raise LivenessError(INTERNAL_ERROR, "The liveness check failed on the server.") from e
        face = scored.face
        if face is None:  # no usable face (none, or several under "reject")
            return S.Observation(box=None), versions, bgr
        signals = None
        if self.measure is not None:
            try:
                signals = await self.measure(self.ops, bgr, face, versions)
            except Exception:
                if not self._measure_failed_logged:
                    log.exception("landmark measurement failed (logged once)")
                    self._measure_failed_logged = True
        return (
            S.Observation(box=(float(face.x), float(face.y), float(face.w), float(face.h)), passive=scored.score,
                          hist=colour_hist(identity_crop(bgr, face)), signals=signals),
            versions,
            bgr,
        )

    def _verdict(self, state: dict[str, Any]) -> tuple[str, list[str]]:
        reasons = []
        if state["status"] == S.FAILED:
            reasons.append(state["reason"])
        elif state["index"] < len(state["steps"]):
            reasons.append(S.STEPS_INCOMPLETE)
        mean = S.passive_mean(state)
        if state["passive_n"] < self.settings.challenge_min_passive_frames:
            reasons.append(S.TOO_FEW_FRAMES)
        if mean is None or mean < self.settings.threshold:
            reasons.append(S.PASSIVE_SCORE_LOW)
        return ("failed" if reasons else "passed"), reasons

    async def complete(self, credential: Credential, session_id: str) -> dict[str, Any]:
        """The verdict (paid for at ``start``, never charged here); again: the same stored verdict."""
        key_id = await self.admission.owner(credential)
        now = self.clock()
        row = await self._load(key_id, session_id, now)
        for _ in range(CAS_RETRIES):
            if row.status == S.COMPLETED and row.result is not None:
                return self._verdict_answer(row.result)  # idempotent: the stored verdict
            state = _copy(row.state)
            verdict, reasons = self._verdict(state)
            mean = S.passive_mean(state)
            versions = dict((await self.admission.route(key_id)).primary)
            steps_done = [c["step"] for c in state["completed"]]
            claims = {
                "iss": "liveness",
                "sid": row.session_id,
                "verdict": verdict,
                "reasons": reasons,
                "steps": state["steps"],
                "steps_completed": steps_done,
                "passive_score": None if mean is None else round(mean, 6),
                "threshold": self.settings.threshold,
                "frames": state["frames"],
                "model_versions": versions,
            }  # + typ, iat, exp (liveness.tokens.ResultTokens)
            token = self.tokens.result.issue(claims, now, self.settings.challenge_token_ttl_s)
            result: dict[str, Any] = {
                "success": verdict == "passed",  # Liveness_service's meaning: the check passed
                "session_id": row.session_id,
                "verdict": verdict,
                "passed": verdict == "passed",
                "reasons": reasons,
                "verification_time": round(now - row.created_at, 3),
                "timestamp": iso_time(now),
                "total_blinks": int(state.get("blinks", 0)),
                "steps_completed": len(steps_done),
                "total_steps": len(state["steps"]),
                "completed_steps": steps_done,
                "passive_score": claims["passive_score"],
                "threshold": self.settings.threshold,
                "model_versions": versions,
                "result_token": token,
                "token_expires_in": self.settings.challenge_token_ttl_s,
            }
            if self._keep_frame(state) and row.best_frame:
                result["best_frame"] = row.best_frame
            state["status"] = S.COMPLETED
            new = row.with_state(state, result=result, best_frame=None)  # the frame leaves the store now
            if await asyncio.to_thread(self.store.update, new):
                return self._verdict_answer(result)
            row = await self._load(key_id, session_id, now)  # lost a race with another worker
        raise LivenessError(INTERNAL_ERROR, "The challenge session is too busy; call complete again.")

    def _verdict_answer(self, result: dict[str, Any]) -> dict[str, Any]:
        """The stored verdict as answered: Liveness_service's ``verified_image`` is the best frame
        only when the operator keeps frames (``challenge_return_frame``) and the session passed;
        it is added here, not stored twice.  We never write a file: ``verified_image_path`` is null."""
        frame = result.get("best_frame") if self.settings.challenge_return_frame and result.get("passed") else None
        return {**result, "verified_image": frame, "verified_image_path": None}

    async def status(self, credential: Credential, session_id: str) -> dict[str, Any]:
        key_id = await self.admission.owner(credential)
        now = self.clock()
        row = await self._load(key_id, session_id, now)
        st = row.state
        mean = S.passive_mean(st)
        passed = (row.result or {}).get("verdict") == "passed"
        out = {
            **self._progress(row, now),
            "created_at": iso_time(row.created_at),
            # Liveness_service's "completed": every step done (ready for /complete, or completed with a pass)
            "completed": row.status == S.STEPS_DONE or passed,
            "status": row.status,
            "instruction": S.instruction(st),
            "verification_complete": row.status == S.STEPS_DONE or passed,
            "verification_failed": row.status == S.FAILED or (row.result or {}).get("verdict") == "failed",
            "reason": st.get("reason"),
            "completed_steps": [c["step"] for c in st["completed"]],
            "frames": st["frames"],
            "passive_score": None if mean is None else round(mean, 6),
        }
        if row.result is not None:
            out["verdict"] = row.result["verdict"]
        return out

    def stats(self, key_id: str | None = None) -> dict[str, Any]:
        """Session counts of ``key_id`` (None: every key, for the operator)."""
        counts = self.store.counts(self.clock(), key_id)
        return {
            "active_sessions": counts["active"],
            "completed_sessions": counts["passed"],
            "failed_sessions": counts["failed"],
            "expired_sessions": counts["expired"],
            "max_sessions": self.settings.challenge_max_sessions,
            "max_sessions_per_key": self.settings.challenge_max_sessions_per_key,
            "sessions_per_key_per_minute": self.settings.challenge_sessions_per_key_per_minute,
            "max_frames_per_session": self.settings.challenge_max_frames,
            "session_expiry_minutes": int(self.settings.challenge_session_ttl_s // 60),
            "challenge_pool": list(self.pool),
            "steps_per_session": self.settings.challenge_steps,
        }

    def active_sessions(self) -> int:
        """Live sessions of every key (``GET /health``: a server-wide count, no tenant's)."""
        return self.store.counts(self.clock())["active"]

    def close(self) -> None:
        self.store.close()


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(state)


def _jpeg_b64(bgr: np.ndarray) -> str:
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")
