"""Fuse per-model probabilities into one liveness score and decide."""

from __future__ import annotations

import numpy as np

from liveness.antispoof.minifasnet import LIVE_CLASS


def fuse(probabilities: list[np.ndarray]) -> float:
    """Mean of the live-class probabilities (upstream sums the softmax vectors and halves)."""
    return float(np.mean([p[LIVE_CLASS] for p in probabilities]))


def decide(score: float, threshold: float) -> bool:
    return score >= threshold
