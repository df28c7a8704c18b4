"""The one inference interface the domain code calls: run model M, version V, on a batch.

Two implementations: the embedded ONNX Runtime backend (default) and the Triton backend.
Which version serves which request is decided outside (``liveness.rollout``); backends only
load, warm, run and unload the versions they are asked for.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from liveness.inference.repository import ModelConfig, ModelVersion


class InferenceBackend(Protocol):
    name: str  # "embedded" | "triton"

    def config(self, model: str) -> ModelConfig: ...

    def available_versions(self, model: str) -> list[int]:
        """Versions in the model repository now, ascending."""
        ...

    def load_sync(self, model: str, version: int) -> ModelVersion:
        """``load`` for start-up, before the event loop serves."""
        ...

    def mark_ready(self) -> None: ...

    def loaded_versions(self, model: str) -> list[int]:
        """Versions ready to take traffic, ascending."""
        ...

    def version_info(self, model: str, version: int) -> ModelVersion: ...

    async def load(self, model: str, version: int) -> ModelVersion:
        """Load and warm a version (idempotent).  Raises if it cannot serve; nothing changes then."""
        ...

    async def unload(self, model: str, version: int) -> None: ...

    async def infer(self, model: str, x: np.ndarray, version: int) -> list[np.ndarray]:
        """Rows of ``x`` in, the model's outputs (config order) for those rows out."""
        ...

    @property
    def ready(self) -> bool: ...

    def close(self) -> None: ...
