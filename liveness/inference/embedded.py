"""In-process ONNX Runtime backend, batched per model version as the model's config.pbtxt says."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

# On-premises means no phoning home.  What really turns the Linux wheel's telemetry off is
# ORT_DISABLE_TELEMETRY, set before this import by liveness/__init__.py; this call only stops
# the events of sessions made from here on.
ort.disable_telemetry_events()

from liveness.errors import MODEL_UNAVAILABLE, LivenessError
from liveness.inference.batcher import BatchObserver, DynamicBatcher
from liveness.inference.repository import LocalRepository, ModelConfig, ModelVersion, file_sha256

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    info: ModelVersion
    batcher: DynamicBatcher


class EmbeddedBackend:
    name = "embedded"

    def __init__(
        self,
        repository: Path,
        *,
        intra_op_threads: int = 1,
        inflight_per_model: int = 2,
        observer: BatchObserver | None = None,
    ) -> None:
        self.repository = repository
        self.local = LocalRepository(repository)
        self._threads = intra_op_threads
        self._inflight = inflight_per_model
        self._observer = observer
        self._executor = ThreadPoolExecutor(max_workers=max(4, inflight_per_model * 4), thread_name_prefix="ort")
        self._loaded: dict[tuple[str, int], _Loaded] = {}
        self._ready = False

    # -- loading -------------------------------------------------------------------------------

    def config(self, model: str) -> ModelConfig:
        return self.local.config(model)

    def available_versions(self, model: str) -> list[int]:
        return self.local.available_versions(model)

    def load_sync(self, model: str, version: int) -> ModelVersion:
        key = (model, version)
        if key in self._loaded:
            return self._loaded[key].info
        path = self.local.model_file(model, version)
        cfg = self.config(model)
        sess = self._session(path, self._threads)
        self._warm(sess, cfg)
        output_names = [o.name for o in cfg.outputs] or [o.name for o in sess.get_outputs()]
        input_name = cfg.inputs[0].name if cfg.inputs else sess.get_inputs()[0].name

        def run(x: np.ndarray, _s=sess, _i=input_name, _o=output_names) -> list[np.ndarray]:
            return _s.run(_o, {_i: x})

        info = ModelVersion(model, version, file_sha256(path))
        batcher = DynamicBatcher(
            f"{model}:{version}",
            run,
            max_batch_size=cfg.max_batch_size,
            max_queue_delay_s=cfg.max_queue_delay_us / 1e6,
            executor=self._executor,
            max_inflight=self._inflight,
            observer=(lambda rows, secs, _m=model, _v=version: self._observer(_m, _v, rows, secs)) if self._observer else None,
        )
        self._loaded[key] = _Loaded(info, batcher)
        log.info("loaded model %s version %d (max_batch_size %d, queue delay %d us)",
                 model, version, cfg.max_batch_size, cfg.max_queue_delay_us)
        return info

    async def load(self, model: str, version: int) -> ModelVersion:
        # Session creation and warm-up take ~100 ms: off the event loop, so serving goes on.
        return await asyncio.get_running_loop().run_in_executor(None, self.load_sync, model, version)

    async def unload(self, model: str, version: int) -> None:
        self._loaded.pop((model, version), None)

    def mark_ready(self) -> None:
        self._ready = True

    @staticmethod
    def _session(path: Path, threads: int) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    @staticmethod
    def _warm(sess: ort.InferenceSession, cfg: ModelConfig) -> None:
        # One real run allocates ORT's arenas, so the first request is not the slow one.
        inp = sess.get_inputs()[0]
        dims = list(cfg.inputs[0].dims) if cfg.inputs else list(inp.shape[1:])
        dims = [d if isinstance(d, int) and d > 0 else 64 for d in dims]
        sess.run(None, {inp.name: np.zeros([1, *dims], np.float32)})

    # -- serving -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    def loaded_versions(self, model: str) -> list[int]:
        return sorted(v for (m, v) in self._loaded if m == model)

    def version_info(self, model: str, version: int) -> ModelVersion:
        return self._loaded[(model, version)].info

    async def infer(self, model: str, x: np.ndarray, version: int) -> list[np.ndarray]:
        loaded = self._loaded.get((model, version))
        if loaded is None:
            raise LivenessError(MODEL_UNAVAILABLE, f"model {model} version {version} is not loaded")
        return await loaded.batcher.submit(x)

    def close(self) -> None:
        self._ready = False
        self._executor.shutdown(wait=False, cancel_futures=True)
