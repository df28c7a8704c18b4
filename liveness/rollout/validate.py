"""Prove a model version can serve before it takes traffic: it loads, it runs, and on the real
inputs the converters stored beside it (``parity.npz``) it reproduces the source model within the
tolerance recorded at build time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class ValidationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Validation:
    model: str
    version: int
    metric: str
    max_diff: float
    tolerance: float
    inputs: int


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def validate_version(repository: Path, model: str, version: int) -> Validation:
    folder = repository / model / str(version)
    onnx_file, ref_file = folder / "model.onnx", folder / "parity.npz"
    if not onnx_file.is_file():
        raise ValidationError(f"{model} version {version}: no {onnx_file}")
    if not ref_file.is_file():
        raise ValidationError(f"{model} version {version}: no parity reference {ref_file}; rebuild with the converters")
    import onnxruntime as ort  # only here: importing the rollout code must not need ONNX Runtime

    try:
        ref = np.load(ref_file)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: ref["x"]})[0]
    except Exception as e:  # a file that does not load or run never takes traffic
        raise ValidationError(f"{model} version {version} does not run: {e}") from e
    metric, tolerance, expected = str(ref["metric"]), float(ref["tolerance"]), ref["y"]
    if got.shape != expected.shape:
        raise ValidationError(f"{model} version {version}: output shape {got.shape} != {expected.shape}")
    if metric == "softmax":  # classifiers: what matters is the probability the decision uses
        cols = [int(ref["live_class"])] if "live_class" in ref else slice(None)
        diff = float(np.max(np.abs(_softmax(got)[:, cols] - _softmax(expected)[:, cols])))
    else:
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    if not diff <= tolerance:
        raise ValidationError(f"{model} version {version}: parity {diff:.2e} exceeds {tolerance:.2g} on {len(ref['x'])} real inputs")
    return Validation(model, version, metric, diff, tolerance, int(len(ref["x"])))
