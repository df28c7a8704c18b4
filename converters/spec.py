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
class VariantSpec:
    """An extra version of a model derived from its version 1 (e.g. INT8), written beside it."""

    version: int
    description: str
    # (version-1 model, sources dir) -> the variant model.
    transform: Callable[[onnx.ModelProto, Path], onnx.ModelProto]
    # (version-1 model, variant, sources dir) -> JSON-able measurements on real inputs; must hold
    # "max_abs_dev" (compared to ``tolerance``) and "failures" (list of str; must be empty).
    evaluate: Callable[[onnx.ModelProto, onnx.ModelProto, Path], dict]
    tolerance: float  # on max_abs_dev (for the anti-spoof models: |p(live) variant - p(live) v1|)
    # measurements -> {file name: text} written next to the variant's model.onnx.
    notes: Callable[[dict], dict[str, str]] | None = None


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
    variants: tuple[VariantSpec, ...] = ()
    # Real inputs stored with every version as parity.npz, with the outputs version 1 gives on
    # them: the service re-checks a version against them before it takes traffic.
    reference_inputs: Callable[[Path], np.ndarray] | None = None
    reference_metric: str = "max_abs"  # or "softmax" for classifiers (compare probabilities)
    reference_extra: dict[str, int] = field(default_factory=dict)  # e.g. live_class: the column compared


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0
