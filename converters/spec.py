"""What one model in the repository is: where it comes from, how it is built and checked,
and how Triton (and our embedded backend) should batch it.  Adding a model is one ``ModelSpec``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dims: tuple[int, ...]  # without the batch dim; -1 = variable
    dtype: str = "TYPE_FP32"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: str  # detector | antispoof | landmarks | embedder
    version: int
    sources: tuple[str, ...]  # paths relative to the model sources dir, all sha256-pinned
    build: Callable[[Path], onnx.ModelProto]
    # Feeds real inputs through source and converted model; returns named max abs diffs.
    parity: Callable[[onnx.ModelProto, Path], dict[str, float]]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 32
    max_queue_delay_us: int = 2000
    preferred_batch_sizes: tuple[int, ...] = ()
    # Pre/post-processing facts the runtime needs, written into config.pbtxt ``parameters``.
    parameters: dict[str, str] = field(default_factory=dict)
    licence: str = ""
    upstream: str = ""
    parity_tolerance: float = 1e-4


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0
