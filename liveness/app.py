"""The application core: models, pipeline, versions and key store wired together, no web framework.

HTTP (service.py) and any other front end call ``LivenessApp``; each vendor API is a thin
adapter that only parses requests and formats answers.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import numpy as np

from liveness.errors import INTERNAL_ERROR, VERIFICATION_UNAVAILABLE, LivenessError
from liveness.imaging import decode_image
from liveness.inference.base import InferenceBackend
from liveness.inference.batcher import BatchObserver
from liveness.keys import Credential, KeyInfo, KeyStore, Prepaid, Reservation, open_key_store
from liveness.keys.charge import charged
from liveness.pipeline import LivenessResult, PassivePipeline, PreparedFace
from liveness.rollout.manager import LiveRouting, PolicyBook
from liveness.rollout.policy import load_policy_file
from liveness.rollout.router import Route
from liveness.rollout.store import open_policy_store
from liveness.settings import Settings

log = logging.getLogger("liveness")

ShadowObserver = Callable[[str, int, int, float, float], None]  # model, stable, candidate, p_stable, p_cand


def make_backend(settings: Settings, observer: BatchObserver | None) -> InferenceBackend:
    if settings.backend == "triton":
        from liveness.inference.triton import TritonBackend  # tritonclient only when used

        return TritonBackend(settings)
    from liveness.inference.embedded import EmbeddedBackend

    return EmbeddedBackend(
        settings.model_repository,
        intra_op_threads=settings.ort_intra_op_threads,
        inflight_per_model=settings.inference_concurrency,
        observer=observer,
    )


class LivenessApp:
    def __init__(
        self,
        settings: Settings,
        observer: BatchObserver | None = None,
        shadow_observer: ShadowObserver | None = None,
    ) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=settings.cpu_threads, thread_name_prefix="cpu")
        self.backend = make_backend(settings, observer)
        self.pipeline = PassivePipeline(self.backend, settings, self.executor)
        # The landmark models (active challenges) are routed, versioned and loaded like the others.
        landmarks = list(settings.landmark_models) if settings.challenges_enabled else []
        # Face verification (sessions' *-verify modes, /v1/verify): keypoint detector + embedder.
        recognition = list(settings.verification_models) if settings.verification_enabled else []
        extra = [m for m in dict.fromkeys(landmarks + recognition) if m not in self.pipeline.model_names]
        self.models = self.pipeline.model_names + extra
        self.shadow_observer = shadow_observer
        self._background: set[asyncio.Task] = set()
        self.policy_store = open_policy_store(str(settings.db_path), settings.mongodb_uri)
        self.book = PolicyBook(
            settings.model_repository, self.models, load_policy_file(settings.model_policy_file), self.policy_store
        )
        self.routing = LiveRouting(self.book, self.backend)  # loads and warms what the policies need
        self.verifier = None
        if settings.verification_enabled:
            from liveness.recognition import FaceVerifier

            self.verifier = FaceVerifier(
                self.backend, self.executor, threshold=settings.verify_threshold,
                detector_confidence=settings.detector_confidence, fallback=settings.detector_fallback,
            )
        self.backend.mark_ready()
        self.keys: KeyStore | None = None
        if settings.auth_enabled:
            self.keys = open_key_store(str(settings.db_path), settings.mongodb_uri)
        else:
            log.warning(
                "!!! AUTHENTICATION IS DISABLED (LIVENESS_AUTH_ENABLED=false): every client is accepted "
                "and no quota is enforced. Never run this way outside a local demo. !!!"
            )

    @property
    def ready(self) -> bool:
        return self.backend.ready

    # -- keys and quota ------------------------------------------------------------------------

    # A credential is a raw API key (HTTP) or a ``Principal`` whose key_id a front end has
    # already authenticated (gRPC bearer token); quota and revocation apply the same to both.

    async def admit(self, credential: Credential) -> KeyInfo | None:
        """Refuse unknown keys and spent quotas before any work, without charging anything."""
        if self.keys is None:
            return None
        return await asyncio.to_thread(self.keys.check_credential, credential)

    @asynccontextmanager
    async def charge(self, credential: Credential) -> AsyncIterator[Reservation | None]:
        """Reserve one unit of the key's quota; keep it only if the body succeeds."""
        if self.keys is None or isinstance(credential, Prepaid):
            yield None
            return
        async with charged(self.keys, credential) as reservation:  # cancellation-safe
            yield reservation

    # -- checks --------------------------------------------------------------------------------

    async def check_image(self, raw_key: Credential, image: bytes | Callable[[], bytes]) -> LivenessResult:
        """Key and quota are checked first, so nothing is decoded for a client we would refuse.
        A unit is reserved only once the input has proved valid (decoded, one usable face): bad
        input never holds a unit that a concurrent valid request of the same key needs.
        ``image`` may be a callable that extracts the bytes (base64 decoding, form parsing)."""
        (result,) = await self.check_images(raw_key, [image])
        return result

    async def check_images(
        self, credential: Credential, images: Sequence[bytes | Callable[[], bytes]]
    ) -> list[LivenessResult]:
        """``check_image`` for several images of one request, charged as ONE unit: every image
        must prove valid before the unit is reserved.  With several images, an input error
        names the image (``details["image"]``, 0-based)."""
        info = await self.admit(credential)
        await self.routing.refresh()
        route = self.routing.router.route(info.key_id if info else None)
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
        results: list[LivenessResult] = []
        async with self.charge(credential):
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
                self._spawn(self._shadow(prepared, route, result))
        return results

    # -- face verification (liveness.recognition) ----------------------------------------------

    def require_verifier(self) -> Any:
        if self.verifier is None:
            raise LivenessError(VERIFICATION_UNAVAILABLE, "Face verification is not enabled on this server.")
        return self.verifier

    async def decode_bgr(self, data: bytes) -> np.ndarray:
        """Decode (limits, EXIF orientation) in the CPU pool, as the pipeline does."""
        loop = asyncio.get_running_loop()
        return (await loop.run_in_executor(self.executor, decode_image, data, self.pipeline.limits)).bgr

    def recognition_versions(self, versions: Mapping[str, int]) -> list[dict[str, object]]:
        """The verification models' versions among ``versions``, as answers report them."""
        return [self.backend.version_info(m, versions[m]).as_dict()
                for m in self.settings.verification_models if m in versions]

    async def compare_faces(self, credential: Credential, images: Callable[[], tuple[bytes, bytes]]) -> dict:
        """``POST /v1/verify``: are two images the same person?  Both must hold exactly one face
        before the one unit is charged; errors name the image (``details["field"]``)."""
        verifier = self.require_verifier()
        info = await self.admit(credential)
        await self.routing.refresh()
        versions = self.routing.router.route(info.key_id if info else None).primary
        templates = []
        for name, data in zip(("image1", "image2"), images()):
            try:
                templates.append(await verifier.reference(await self.decode_bgr(data), versions))
            except LivenessError as e:
                e.details.setdefault("field", name)
                raise
        async with self.charge(credential):
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
            await asyncio.to_thread(self.policy_store.record_shadow, *sample, self.settings.threshold)
            if self.shadow_observer is not None:
                self.shadow_observer(*sample)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def close(self) -> None:
        self.backend.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.keys is not None:
            self.keys.close()
        self.policy_store.close()
