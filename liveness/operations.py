"""The use cases every front end calls, on one admission context (``liveness.admission``):

    check_images    one or more images, ONE unit once every image proved valid; shadow after success
    check_video     one video, one unit once it passed the probe, kept for a verdict (liveness.video)
    score_frame     one decoded frame through the passive models, uncharged (challenge frames,
                    video frames: their request's admission decides who pays)
    compare_faces   two faces (images, or stored detections of the caller: liveness.detections),
                    one unit once both are valid

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
from liveness.detections import Detection, DetectionRef, DetectionStore
from liveness.detection.base import Face
from liveness.errors import (
    INTERNAL_ERROR, INVALID_REQUEST, MULTIPLE_FACES, NO_FACE, VERIFICATION_UNAVAILABLE, LivenessError,
)
from liveness.imaging import decode_image
from liveness.inference.base import InferenceBackend
from liveness.keys import Credential, KeyStore
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
VERIFY_FIELDS = ("image1", "image2")  # what /v1/verify's errors name (details["field"])


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


@dataclass(frozen=True)
class PhotoVerification:
    """``verify_photo``'s answer: per live image its liveness (None when liveness was disabled),
    its match against the photo and its verification face; the photo's face; the threshold."""

    liveness: list[LivenessResult] | None
    matches: list[Any]  # liveness.recognition.VerifyResult, one per live image
    live_faces: list[Any]  # liveness.recognition.FaceTemplate, one per live image
    photo_face: Any  # liveness.recognition.FaceTemplate
    threshold: float


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
        detections: DetectionStore | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.pipeline = pipeline
        self.executor = executor
        self.admission = admission
        self.verifier = verifier
        self.policy_store = policy_store
        self.shadow_observer = shadow_observer
        self.detections = detections  # stored detections (return_detection); None: verification off

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
        return_photo: bool = False, return_normalized: bool = False, return_detection: bool = False,
    ) -> "VideoResult":
        """One video (liveness.video.check_video: the charging rules are there)."""
        from liveness.video.check import check_video  # PyAV only when used

        return await check_video(self, credential, data, content_type, return_photo=return_photo,
                                 return_normalized=return_normalized, return_detection=return_detection)

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

    async def compare_faces(
        self, credential: Credential, faces: Callable[[], tuple[Image | DetectionRef, Image | DetectionRef]],
    ) -> dict:
        """``POST /v1/verify``: are two faces the same person?  Each is an image (exactly one face)
        or a ``DetectionRef`` to one of the caller's stored detections (liveness.detections:
        another key's, an expired or an unknown id is ``detection_not_found``).  Both must be valid
        before the one unit is charged; errors name the field (``details["field"]``).  An image
        is embedded with the version of the embedder that made a detection it is compared with."""
        verifier = self.require_verifier()
        async with self.admission.admit(credential) as ctx:
            versions = await ctx.versions()
            pair = faces()
            stored: dict[int, Detection] = {}
            for i, item in enumerate(pair):
                if isinstance(item, DetectionRef):
                    stored[i] = await self._detection(ctx.key_id, item, f"detection_id{i + 1}")
            if len({d.model.sha256 for d in stored.values()}) > 1:
                raise LivenessError(INVALID_REQUEST, "The two detections were made by different embedder versions "
                                    "and cannot be compared.", {"field": "detection_id2"})
            embedder = verifier.model_names[-1]
            for d in stored.values():  # embeddings of different embedder versions are not comparable
                versions[embedder] = d.model.version
            embeddings: list[np.ndarray] = []
            described: list[dict[str, object]] = []
            for i, item in enumerate(pair):
                if i in stored:
                    d = stored[i]
                    embeddings.append(d.embedding)
                    described.append(d.describe())
                    continue
                try:
                    t = await verifier.reference(await self.decode_bgr(item), versions)
                except LivenessError as e:
                    e.details.setdefault("field", VERIFY_FIELDS[i])
                    raise
                embeddings.append(t.embedding)
                described.append(t.describe())
            await ctx.input_valid()
            r = verifier.match(embeddings[0], embeddings[1])
        return {
            "is_identical": bool(r.is_identical),
            "match_confidence": round(float(r.match_confidence), 4),
            "threshold": self.settings.verify_threshold,
            "faces": described,
            "models": self.recognition_versions(versions),
        }

    async def _detection(self, key_id: str, ref: DetectionRef, field_name: str) -> Detection:
        if self.detections is None:
            raise LivenessError(VERIFICATION_UNAVAILABLE, "Detections need face verification, which is off on this server.")
        try:
            return await asyncio.to_thread(self.detections.get, key_id, ref.detection_id)
        except LivenessError as e:
            e.details.setdefault("field", field_name)
            raise

    async def verify_photo(self, credential: Credential, live_images: Sequence[Image], photo: Image, *,
                           liveness: bool = True) -> "PhotoVerification":
        """BWS 3 PhotoVerify: is the person in the live images the one in ``photo``, and (unless
        ``liveness`` is off) are the live images live?  ONE unit, reserved once the photo holds
        exactly one face and every live image a usable face (errors name ``details["field"]``:
        ``photo`` or ``live_images[i]``)."""
        from liveness.errors import NO_FACE as _NO_FACE

        verifier = self.require_verifier()
        async with self.admission.admit(credential) as ctx:
            route = await ctx.route()
            versions = dict(route.primary)

            async def named(field: str, work: Callable[[], Any]) -> Any:
                try:
                    return await work()
                except LivenessError as e:
                    e.details.setdefault("field", field)
                    raise

            reference = await named("photo", lambda: self._reference(verifier, photo, versions))
            prepared: list[PreparedFace] = []
            probes = []
            for i, image in enumerate(live_images):
                field_name = f"live_images[{i}]"
                bgr = await named(field_name, lambda image=image: self.decode_bgr(image))
                face = None
                if liveness:
                    prepared.append(await named(field_name, lambda bgr=bgr: self.pipeline.prepare_bgr(bgr, versions)))
                    face = prepared[-1].face
                probe = await verifier.probe(bgr, versions, face)
                if probe is None:  # the verifier's detector finds no face where liveness judged one
                    raise LivenessError(_NO_FACE, "No face usable for verification was found.", {"field": field_name})
                probes.append(probe)
            await ctx.input_valid()
            results = [await self.pipeline.classify(p, versions) for p in prepared]
            matches = [verifier.match(reference.embedding, probe.embedding) for probe in probes]
        return PhotoVerification(results if liveness else None, matches, probes, reference, verifier.threshold)

    async def _reference(self, verifier: "FaceVerifier", photo: Image, versions: Mapping[str, int]) -> Any:
        return await verifier.reference(await self.decode_bgr(photo), versions)

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
