"""The use cases every front end calls, on one admission context (``liveness.admission``):

    check_images    one or more images, ONE unit once every image proved valid; shadow after success
    check_video     one video, one unit once it passed the probe, kept for a verdict (liveness.video)
    score_frame     one decoded frame through the passive models, uncharged (challenge frames,
                    video frames: their request's admission decides who pays)
    compare_faces   two images, one unit once both hold exactly one face

Challenge sessions (liveness.challenges) and app-server sessions (liveness.sessions) are built on
these operations and on ``Operations.admission``; no web framework is imported here.
``LivenessApp`` (liveness.app) is these operations wired to the real models and stores.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from liveness.admission import Admission
from liveness.decision import fuse
from liveness.detection.base import Face
from liveness.errors import INTERNAL_ERROR, MULTIPLE_FACES, NO_FACE, VERIFICATION_UNAVAILABLE, LivenessError
from liveness.imaging import decode_image
from liveness.inference.base import InferenceBackend
from liveness.keys import Credential, KeyInfo, KeyStore
from liveness.pipeline import LivenessResult, PassivePipeline, PreparedFace
from liveness.rollout.router import Route
from liveness.settings import Settings

if TYPE_CHECKING:
    from liveness.recognition import FaceVerifier
    from liveness.rollout.store import PolicyStore
    from liveness.video.check import VideoResult

log = logging.getLogger("liveness")

T = TypeVar("T")
ShadowObserver = Callable[[str, int, int, float, float], None]  # model, stable, candidate, p_stable, p_cand
Image = bytes | Callable[[], bytes]  # the bytes, or a callable that extracts them (base64, form parsing)


@dataclass(frozen=True)
class FrameScore:
    """One frame through the passive models: the chosen face and its fused p(live), or why
    there is no usable face (``reason``: no_face | multiple_faces)."""

    prepared: PreparedFace | None
    score: float | None  # fused over the anti-spoof models
    scores: dict[str, float] = field(default_factory=dict)  # p(live) per model
    reason: str | None = None
    faces_found: int = 0

    @property
    def face(self) -> Face | None:
        return self.prepared.face if self.prepared is not None else None


class Operations:
    def __init__(
        self,
        settings: Settings,
        *,
        backend: InferenceBackend,
        pipeline: PassivePipeline,
        executor: Executor,
        admission: Admission,
        verifier: "FaceVerifier | None" = None,
        policy_store: "PolicyStore | None" = None,
        shadow_observer: ShadowObserver | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.pipeline = pipeline
        self.executor = executor
        self.admission = admission
        self.verifier = verifier
        self.policy_store = policy_store
        self.shadow_observer = shadow_observer

    @property
    def keys(self) -> KeyStore | None:
        return self.admission.keys

    # -- helpers for the flows built on these operations --------------------------------------

    async def cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the CPU pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def decode_bgr(self, data: Image) -> np.ndarray:
        """Decode (limits, EXIF orientation) in the CPU pool, as the pipeline does."""
        limits = self.pipeline.limits
        return await self.cpu(lambda: decode_image(data() if callable(data) else data, limits).bgr)

    def require_verifier(self) -> "FaceVerifier":
        if self.verifier is None:
            raise LivenessError(VERIFICATION_UNAVAILABLE, "Face verification is not enabled on this server.")
        return self.verifier

    def recognition_versions(self, versions: Mapping[str, int]) -> list[dict[str, object]]:
        """The verification models' versions among ``versions``, as answers report them."""
        return [self.backend.version_info(m, versions[m]).as_dict()
                for m in self.settings.verification_models if m in versions]

    # -- use cases -----------------------------------------------------------------------------

    async def admit(self, credential: Credential) -> KeyInfo | None:
        """Refuse unknown keys and spent quotas before any work, without charging anything."""
        return await self.admission.check(credential)

    async def check_image(self, credential: Credential, image: Image) -> LivenessResult:
        """Key and quota are checked first, so nothing is decoded for a client we would refuse.
        A unit is reserved only once the input has proved valid (decoded, one usable face): bad
        input never holds a unit that a concurrent valid request of the same key needs.
        ``image`` may be a callable that extracts the bytes (base64 decoding, form parsing)."""
        (result,) = await self.check_images(credential, [image])
        return result

    async def check_images(self, credential: Credential, images: Sequence[Image]) -> list[LivenessResult]:
        """``check_image`` for several images of one request, charged as ONE unit: every image
        must prove valid before the unit is reserved.  With several images, an input error
        names the image (``details["image"]``, 0-based)."""
        async with self.admission.admit(credential) as ctx:
            route = await ctx.route()
            prepared_all: list[PreparedFace] = []
            for index, image in enumerate(images):
                try:
                    prepared_all.append(await self.pipeline.prepare(image, route.primary))
                except LivenessError as e:
                    if len(images) > 1:
                        e.details.setdefault("image", index)
                    raise
                except Exception as e:
                    log.exception("image preparation failed")
                    raise LivenessError(INTERNAL_ERROR, "The liveness check failed on the server.") from e
            await ctx.input_valid()
            results: list[LivenessResult] = []
            try:
                for prepared in prepared_all:
                    results.append(await self.pipeline.classify(prepared, route.primary))
            except LivenessError:
                raise
            except Exception as e:  # ours, not the client's: logged (no image data), refunded
                log.exception("liveness check failed")
                raise LivenessError(INTERNAL_ERROR, "The liveness check failed on the server.") from e
            if route.shadow:
                for prepared, result in zip(prepared_all, results):
                    ctx.after_success(lambda p=prepared, r=result: self._shadow(p, route, r))
        return results

    async def check_video(
        self, credential: Credential, data: bytes, content_type: str = "", *,
        return_photo: bool = False, return_normalized: bool = False,
    ) -> "VideoResult":
        """One video (liveness.video.check_video: the charging rules are there)."""
        from liveness.video.check import check_video  # PyAV only when used

        return await check_video(self, credential, data, content_type,
                                 return_photo=return_photo, return_normalized=return_normalized)

    async def score_frame(self, bgr: np.ndarray, versions: Mapping[str, int]) -> FrameScore:
        """One decoded frame through the passive models, never charged.  No usable face is an
        answer (``reason``), not an error; any other error propagates."""
        try:
            prepared = await self.pipeline.prepare_bgr(bgr, versions)
        except LivenessError as e:
            if e.kind in (NO_FACE, MULTIPLE_FACES):
                return FrameScore(None, None, reason=e.code, faces_found=int(e.details.get("faces", 0)))
            raise
        scores = await self.pipeline.classify_probs(prepared, versions)
        s = self.settings
        return FrameScore(prepared, fuse(scores, s.fusion, s.fusion_weights), scores, None, prepared.faces_found)

    async def compare_faces(self, credential: Credential, images: Callable[[], tuple[bytes, bytes]]) -> dict:
        """``POST /v1/verify``: are two images the same person?  Both must hold exactly one face
        before the one unit is charged; errors name the image (``details["field"]``)."""
        verifier = self.require_verifier()
        async with self.admission.admit(credential) as ctx:
            versions = await ctx.versions()
            templates = []
            for name, data in zip(("image1", "image2"), images()):
                try:
                    templates.append(await verifier.reference(await self.decode_bgr(data), versions))
                except LivenessError as e:
                    e.details.setdefault("field", name)
                    raise
            await ctx.input_valid()
            r = verifier.match(templates[0].embedding, templates[1].embedding)
        return {
            "is_identical": bool(r.is_identical),
            "match_confidence": round(float(r.match_confidence), 4),
            "threshold": self.settings.verify_threshold,
            "faces": [t.describe() for t in templates],
            "models": self.recognition_versions(versions),
        }

    async def _shadow(self, prepared: PreparedFace, route: Route, result: LivenessResult) -> None:
        """Run candidate versions on the same crops; record, never return, their scores."""
        versions = {**route.primary, **route.shadow}
        try:
            scores = await self.pipeline.classify_probs(prepared, versions)
        except Exception:
            log.warning("shadow inference failed", exc_info=True)
            return
        for model, p in scores.items():
            if model not in route.shadow:
                continue
            sample = (model, route.primary[model], route.shadow[model], result.model_scores[model], p)
            if self.policy_store is not None:
                await asyncio.to_thread(self.policy_store.record_shadow, *sample, self.settings.threshold)
            if self.shadow_observer is not None:
                self.shadow_observer(*sample)
