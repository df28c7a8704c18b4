"""In-process ONNX Runtime backend, batched per model as the model's config.pbtxt says."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from liveness.errors import MODEL_UNAVAILABLE, LivenessError
from liveness.inference.batcher import BatchObserver, DynamicBatcher
from liveness.inference.repository import ModelConfig, ModelVersion, file_sha256, load_repository

log = logging.getLogger(__name__)


class EmbeddedBackend:
    def __init__(
        self,
        repository: Path,
        models: list[str],
        *,
        intra_op_threads: int = 1,
        inflight_per_model: int = 2,
        observer: BatchObserver | None = None,
    ) -> None:
        repo = load_repository(repository)
        missing = [m for m in models if m not in repo]
        if missing:
            raise FileNotFoundError(f"model repository {repository} lacks {missing}; run `make models`")
        self._configs: dict[str, ModelConfig] = {m: repo[m] for m in models}
        self._executor = ThreadPoolExecutor(max_workers=max(2, inflight_per_model * len(models)), thread_name_prefix="ort")
        self._versions: dict[str, ModelVersion] = {}
        self._batchers: dict[str, DynamicBatcher] = {}
        self._ready = False
        for name, cfg in self._configs.items():
            version = cfg.latest
            path = cfg.model_file(version)
            sess = self._session(path, intra_op_threads)
            self._warm(sess, cfg)
            output_names = [o.name for o in cfg.outputs] or [o.name for o in sess.get_outputs()]
            input_name = cfg.inputs[0].name if cfg.inputs else sess.get_inputs()[0].name

            def run(x: np.ndarray, _s=sess, _i=input_name, _o=output_names) -> list[np.ndarray]:
                return _s.run(_o, {_i: x})

            self._versions[name] = ModelVersion(name, version, file_sha256(path))
            self._batchers[name] = DynamicBatcher(
                name,
                run,
                max_batch_size=cfg.max_batch_size,
                max_queue_delay_s=cfg.max_queue_delay_us / 1e6,
                executor=self._executor,
                max_inflight=inflight_per_model,
                observer=observer,
            )
            log.info("loaded model %s version %d (max_batch_size %d, queue delay %d us)",
                     name, version, cfg.max_batch_size, cfg.max_queue_delay_us)
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
        dims = [d if d > 0 else 64 for d in (cfg.inputs[0].dims if cfg.inputs else ())]
        inp = sess.get_inputs()[0]
        if not dims:
            dims = [d if isinstance(d, int) and d > 0 else 64 for d in inp.shape[1:]]
        sess.run(None, {inp.name: np.zeros([1, *dims], np.float32)})

    @property
    def ready(self) -> bool:
        return self._ready

    def config(self, model: str) -> ModelConfig:
        return self._configs[model]

    def version(self, model: str) -> ModelVersion:
        return self._versions[model]

    async def infer(self, model: str, x: np.ndarray) -> list[np.ndarray]:
        batcher = self._batchers.get(model)
        if batcher is None:
            raise LivenessError(MODEL_UNAVAILABLE, f"model {model} is not loaded")
        return await batcher.submit(x)

    def close(self) -> None:
        self._ready = False
        self._executor.shutdown(wait=False, cancel_futures=True)
