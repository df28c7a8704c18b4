"""The application core: models, pipeline and key store wired together, no web framework.

HTTP (service.py) and any other front end call ``LivenessApp``; each vendor API is a thin
adapter that only parses requests and formats answers.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from liveness.errors import INTERNAL_ERROR, LivenessError
from liveness.inference.batcher import BatchObserver
from liveness.inference.embedded import EmbeddedBackend
from liveness.keys import KeyStore, Reservation, open_key_store
from liveness.pipeline import LivenessResult, PassivePipeline, make_detector
from liveness.settings import Settings

log = logging.getLogger("liveness")


class LivenessApp:
    def __init__(self, settings: Settings, observer: BatchObserver | None = None) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=settings.cpu_threads, thread_name_prefix="cpu")
        models = [make_detector(settings).model, *settings.antispoof_models]
        self.backend = EmbeddedBackend(
            settings.model_repository,
            models,
            intra_op_threads=settings.ort_intra_op_threads,
            inflight_per_model=settings.inference_concurrency,
            observer=observer,
        )
        self.pipeline = PassivePipeline(self.backend, settings, self.executor)
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

    async def admit(self, raw_key: str | None) -> None:
        """Refuse unknown keys and spent quotas before any work, without charging anything."""
        if self.keys is None:
            return
        await asyncio.to_thread(self.keys.check, raw_key)

    @asynccontextmanager
    async def charge(self, raw_key: str | None) -> AsyncIterator[Reservation | None]:
        """Reserve one unit of the key's quota; keep it only if the body succeeds."""
        if self.keys is None:
            yield None
            return
        keys = self.keys
        reservation = await asyncio.to_thread(keys.reserve, raw_key)
        try:
            yield reservation
        except BaseException:
            await asyncio.to_thread(keys.refund, reservation)
            raise
        await asyncio.to_thread(keys.commit, reservation)

    async def check_image(self, raw_key: str | None, image: bytes | Callable[[], bytes]) -> LivenessResult:
        """Key and quota are checked first, so nothing is decoded for a client we would refuse.
        A unit is reserved only once the input has proved valid (decoded, one usable face): bad
        input never holds a unit that a concurrent valid request of the same key needs.
        ``image`` may be a callable that extracts the bytes (base64 decoding, form parsing)."""
        await self.admit(raw_key)
        try:
            prepared = await self.pipeline.prepare(image)
        except LivenessError:
            raise
        except Exception as e:
            log.exception("image preparation failed")
            raise LivenessError(INTERNAL_ERROR, "The liveness check failed on the server.") from e
        async with self.charge(raw_key):
            try:
                return await self.pipeline.classify(prepared)
            except LivenessError:
                raise
            except Exception as e:  # ours, not the client's: logged (no image data), refunded
                log.exception("liveness check failed")
                raise LivenessError(INTERNAL_ERROR, "The liveness check failed on the server.") from e

    def close(self) -> None:
        self.backend.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.keys is not None:
            self.keys.close()
