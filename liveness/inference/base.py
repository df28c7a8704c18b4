"""The one inference interface the domain code calls: run model M (version V) on a batch."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from liveness.inference.repository import ModelConfig, ModelVersion


class InferenceBackend(Protocol):
    def config(self, model: str) -> ModelConfig: ...

    def version(self, model: str) -> ModelVersion:
        """The version that currently takes traffic."""
        ...

    async def infer(self, model: str, x: np.ndarray) -> list[np.ndarray]:
        """Rows of ``x`` in, the model's outputs (config order) for those rows out."""
        ...

    @property
    def ready(self) -> bool: ...
