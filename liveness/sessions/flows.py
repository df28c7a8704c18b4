"""A client's attempt in each mode: the same core checks as the API-key endpoints, run for a
session token (``Prepaid``: never charged), recorded in the session (``service.attempts``),
optionally verified against the session's reference face (``service.faces``); challenge attempts
run on the ``ChallengeService`` the session service was built with.  Adapters format what these
return."""

from __future__ import annotations

import base64
import hashlib
import statistics
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from liveness.detection.base import Face
from liveness.errors import NO_FACE, LivenessError
from liveness.imaging import sniff_format
from liveness.pipeline import LivenessResult
from liveness.sessions import model as M
from liveness.sessions.attempts import AttemptResult, Grant, digest
from liveness.sessions.service import SessionService
from liveness.video.check import VideoResult
from liveness.video.decide import Verdict

if TYPE_CHECKING:
    from liveness.challenges import ChallengeService


@dataclass(frozen=True)
class Outcome:
    """What an adapter needs: the session's client view and, for the full answer when the
    session sends results to the client, the core result."""

    view: dict[str, Any]
    result: Any = None  # LivenessResult | VideoResult | challenge dict
    error: LivenessError | None = None

    @property
    def send_results(self) -> bool:
        return "result" in self.view or "error" in self.view


async def _fail(service: SessionService, grant: Grant, err: LivenessError) -> Outcome:
    view = await service.attempts.finish(grant, error=err)  # re-raises our own (5xx) errors after releasing
    return Outcome(view, error=err)


async def passive_attempt(service: SessionService, token: str, image: Callable[[], bytes], *,
                          request: dict[str, Any] | None = None) -> Outcome:
    grant = await service.attempts.begin(token, "passive", request)
    try:
        data = image()
        result: LivenessResult = await service.ops.check_image(grant.credential, data)
        verify = await service.faces.probe(grant, await service.ops.decode_bgr(data), result.face) if grant.params.verify else None
    except LivenessError as err:
        return await _fail(service, grant, err)
    except BaseException:
        await service.attempts.release(grant)
        raise
    attempt = AttemptResult(
        decision=M.REALFACE if result.is_live else M.SPOOFFACE, score=result.score, threshold=result.threshold,
        face=result.face, models=_models(service, grant, result.models), digest=digest(data), verify=verify,
    )
    view = await service.attempts.finish(grant, result=attempt, image=(data, "image/" + _image_type(data)))
    return Outcome(view, result)


async def video_attempt(
    service: SessionService, token: str, video: Callable[[], bytes], content_type: str, *,
    return_photo: bool, return_normalized: bool,
) -> Outcome:
    grant = await service.attempts.begin(token, "video")
    need_photo = grant.params.verify or grant.params.enable_session_image
    try:
        data = video()
        result: VideoResult = await service.ops.check_video(
            grant.credential, data, content_type,
            return_photo=return_photo or need_photo, return_normalized=return_normalized,
        )
        best = result.best_face
        face = None
        if best is not None:
            left, top, right, bottom = best.bbox
            face = Face(float(left), float(top), float(right - left), float(bottom - top), score=1.0)
        verify = None
        if grant.params.verify and best is not None and best.photo_jpeg is not None:
            verify = await service.faces.probe(grant, await service.ops.decode_bgr(best.photo_jpeg), face)
    except LivenessError as err:
        return await _fail(service, grant, err)
    except BaseException:
        await service.attempts.release(grant)
        raise
    image = (best.photo_jpeg, "image/jpeg") if best is not None and best.photo_jpeg is not None else None
    if result.verdict is Verdict.FAILURE_TO_ACQUIRE:
        issue = result.errors[0] if result.errors else None
        err = LivenessError(NO_FACE, issue.message if issue else "No usable face in the video.")
        view = await service.attempts.finish(grant, error=err, image=None)
    else:
        attempt = AttemptResult(
            decision=M.REALFACE if result.alive else M.SPOOFFACE, score=result.average_liveness,
            threshold=result.threshold, face=face, models=_models(service, grant, result.models),
            digest=digest(data), verify=verify,
        )
        view = await service.attempts.finish(grant, result=attempt, image=image)
    if not return_photo and best is not None and best.photo_jpeg is not None:
        result = replace(result, best_face=replace(best, photo_jpeg=None))  # asked for by us, not the client
    return Outcome(view, result)


async def challenge_start(service: SessionService, token: str) -> dict[str, Any]:
    grant = await service.attempts.begin(token, "challenge")
    try:
        out = await service_challenges(service).start(grant.credential, None, admin=False,
                                                      keep_frame=grant.params.enable_session_image)
        await service.attempts.attach_challenge(grant, out["session_id"])
    except LivenessError as err:
        if err.status >= 500:
            await service.attempts.release(grant)
        else:
            await service.attempts.finish(grant, error=err)
        raise
    except BaseException:
        await service.attempts.release(grant)
        raise
    return {**out, "liveness_session_id": grant.session_id, "attempt_id": grant.attempt_id}


async def challenge_process(service: SessionService, token: str, challenge_id: Any, frame: Callable[[], bytes]) -> dict[str, Any]:
    grant = await service.attempts.resume(token, challenge_id)
    data = frame()
    frame_digest = hashlib.sha256(data).digest()

    async def hook(bgr: np.ndarray, face: Face) -> None:
        if grant.params.verify:
            v = await service.faces.probe(grant, bgr, face)
            if v is not None:
                await service.attempts.record_sample(grant, v)

    out = await service_challenges(service).process(grant.credential, challenge_id, data, frame_hook=hook)
    await service.attempts.chain_digest(grant, frame_digest)
    if not grant.params.send_results_to_client:
        out = {k: v for k, v in out.items() if k not in ("frame_score", "passive_score", "model_versions")}
    return out


async def challenge_complete(service: SessionService, token: str, challenge_id: Any) -> Outcome:
    grant = await service.attempts.resume(token, challenge_id)
    out = await service_challenges(service).complete(grant.credential, challenge_id)
    stored = await service.attempts.attempt(grant)  # one read: verify samples and the frames' digest chain
    verify = None
    if grant.params.verify:
        samples = list(stored.get("verify_samples", []))
        confidence = statistics.median(samples) if samples else 0.0
        verify = {"is_identical": bool(samples) and confidence >= service.settings.verify_threshold,
                  "match_confidence": round(confidence, 4), "frames": len(samples)}
    best = out.pop("best_frame", None) if not service.settings.challenge_return_frame else out.get("best_frame")
    image = (base64.b64decode(best), "image/jpeg") if best else None
    attempt = AttemptResult(
        decision=M.REALFACE if out["passed"] else M.SPOOFFACE, score=out.get("passive_score"),
        threshold=out["threshold"], face=None,
        models=[{"name": k, "version": v} for k, v in out["model_versions"].items()],
        digest="sha256:" + stored.get("frames_sha256", hashlib.sha256(b"").hexdigest()),
        reasons=tuple(out.get("reasons", ())), verify=verify,
    )
    view = await service.attempts.finish(grant, result=attempt, image=image)
    return Outcome(view, out)


def challenge_answer(out: Outcome) -> dict[str, Any]:
    """What a session's client gets at completion: the full verdict only when the session sends
    results to the client, always the session view."""
    full = out.result if out.send_results else {"session_id": out.result["session_id"]}
    return {**full, "session": out.view}


def service_challenges(service: SessionService) -> "ChallengeService":
    challenges = service.challenges
    if challenges is None:
        raise RuntimeError("this SessionService was built without a ChallengeService (challenges=...)")
    return challenges


def _models(service: SessionService, grant: Grant, models: Any) -> list[dict[str, Any]]:
    out = [m.as_dict() for m in models]
    if grant.params.verify:
        out += service.faces.models(grant.key_id)
    return out


def _image_type(data: bytes) -> str:
    return sniff_format(data) or "octet-stream"


