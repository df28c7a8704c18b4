"""The application core: models, pipeline, versions and key store wired together, no web framework.

HTTP (service.py) and any other front end call ``LivenessApp``: the use cases of
``liveness.operations`` (one admission context, ``liveness.admission``) on this worker's models;
each vendor API is a thin adapter that only parses requests and formats answers.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from liveness.admission import Admission
from liveness.challenges import ChallengeService
from liveness.challenges.store import open_session_store as open_challenge_store
from liveness.imaging.memory import configure_decode_memory
from liveness.inference.base import InferenceBackend
from liveness.inference.batcher import BatchObserver
from liveness.keys import KeyStore, open_key_store
from liveness.operations import Operations, ShadowObserver
from liveness.pipeline import PassivePipeline
from liveness.rollout.manager import LiveRouting, PolicyBook
from liveness.rollout.policy import load_policy_file
from liveness.rollout.store import open_policy_store
from liveness.sessions import SessionService, open_session_store
from liveness.settings import Settings
from liveness.tokens import TokenService, token_service

__all__ = ["FrontServices", "LivenessApp", "ShadowObserver", "front_services", "make_backend"]

log = logging.getLogger("liveness")


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


class LivenessApp(Operations):
    """The use cases (``liveness.operations``) wired to one worker's models, stores and routing."""

    def __init__(
        self,
        settings: Settings,
        observer: BatchObserver | None = None,
        shadow_observer: ShadowObserver | None = None,
    ) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=settings.cpu_threads, thread_name_prefix="cpu")
        self.backend = make_backend(settings, observer)
        # The worker's decode memory pool; also makes freed image buffers go back to the OS.
        configure_decode_memory(max(settings.decode_memory_mb, settings.max_decode_mb) * 1024 * 1024, settings.decode_wait_s)
        self.pipeline = PassivePipeline(self.backend, settings, self.executor)
        # The landmark models (active challenges) are routed, versioned and loaded like the others.
        landmarks = list(settings.landmark_models) if settings.challenges_enabled else []
        # Face verification (sessions' *-verify modes, /v1/verify): keypoint detector + embedder.
        recognition = list(settings.verification_models) if settings.verification_enabled else []
        extra = [m for m in dict.fromkeys(landmarks + recognition) if m not in self.pipeline.model_names]
        self.models = self.pipeline.model_names + extra
        self.policy_store = open_policy_store(str(settings.db_path), settings.mongodb_uri)
        self.book = PolicyBook(
            settings.model_repository, self.models, load_policy_file(settings.model_policy_file), self.policy_store
        )
        self.routing = LiveRouting(self.book, self.backend)  # loads and warms what the policies need
        verifier = None
        detections = None
        if settings.verification_enabled:
            from liveness.detections import open_detection_store
            from liveness.recognition import FaceVerifier

            verifier = FaceVerifier.from_settings(self.backend, self.executor, settings)
            detections = open_detection_store(settings)  # return_detection's embeddings (liveness.detections)
        self.backend.mark_ready()
        keys: KeyStore | None = None
        if settings.auth_enabled:
            keys = open_key_store(str(settings.db_path), settings.mongodb_uri, lease_s=settings.reservation_lease_s)
            reclaimed = keys.reclaim_expired()  # units of requests a crashed process never settled
            if reclaimed:
                log.warning("gave back %d quota unit(s) reserved by requests that never finished", reclaimed)
        else:
            log.warning(
                "!!! AUTHENTICATION IS DISABLED (LIVENESS_AUTH_ENABLED=false): every client is accepted "
                "and no quota is enforced. Never run this way outside a local demo. !!!"
            )
        super().__init__(
            settings, backend=self.backend, pipeline=self.pipeline, executor=self.executor,
            admission=Admission(keys, self.routing), verifier=verifier, policy_store=self.policy_store,
            shadow_observer=shadow_observer, detections=detections,
        )

    @property
    def ready(self) -> bool:
        return self.backend.ready

    def close(self) -> None:
        self.backend.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.keys is not None:
            self.keys.close()
        self.policy_store.close()
        if self.detections is not None:
            self.detections.close()


class FrontServices(NamedTuple):
    tokens: TokenService
    challenges: ChallengeService
    sessions: SessionService | None  # None: sessions_enabled is off


def front_services(core: LivenessApp, settings: Settings) -> FrontServices:
    """The challenge and app-server session services on ``core``, sharing one token service whose
    ring holds the configured secrets and the stores' older ones (``liveness.tokens.token_ring``);
    the session service gets the challenge service for its challenge mode."""
    challenge_store = open_challenge_store(str(settings.db_path), settings.mongodb_uri)
    session_store = open_session_store(str(settings.db_path), settings.mongodb_uri) if settings.sessions_enabled else None
    tokens = token_service(settings, keys=core.keys, sessions=session_store, challenges=challenge_store)
    challenges = ChallengeService(core, settings, store=challenge_store, tokens=tokens)
    sessions = None
    if session_store is not None:
        sessions = SessionService(core, settings, challenges=challenges, store=session_store, tokens=tokens)
    return FrontServices(tokens, challenges, sessions)
