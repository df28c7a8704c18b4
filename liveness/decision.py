"""Fuse per-model live probabilities into one liveness score and decide.

Pure functions.  ``scores`` maps each anti-spoof model to its p(live), in ``antispoof_models``
order.  Rules (setting ``fusion``, README "Configuration"):

* ``mean``: the arithmetic mean; upstream Silent-Face's rule (it sums the softmax vectors and
  halves, so the live entry of the sum / 2 is the mean of the live probabilities);
* ``min``: the smallest p(live): live only if every model says live (fewer false accepts, more
  false rejects);
* ``weighted``: sum(w_m * p_m) / sum(w_m) with ``fusion_weights`` (every model weighted, > 0).
"""

from __future__ import annotations

from typing import Literal, Mapping

import numpy as np

FusionRule = Literal["mean", "min", "weighted"]


def fuse_mean(scores: Mapping[str, float]) -> float:
    return float(np.mean(list(scores.values())))


def fuse_min(scores: Mapping[str, float]) -> float:
    return float(min(scores.values()))


def fuse_weighted(scores: Mapping[str, float], weights: Mapping[str, float]) -> float:
    missing = [m for m in scores if m not in weights]
    if missing:
        raise ValueError(f"fusion 'weighted': no weight for {', '.join(missing)}")
    if any(not weights[m] > 0 for m in scores):
        raise ValueError("fusion 'weighted': weights must be > 0")
    total = sum(float(weights[m]) for m in scores)
    return float(sum(float(weights[m]) * float(p) for m, p in scores.items()) / total)


def fuse(scores: Mapping[str, float], rule: FusionRule = "mean", weights: Mapping[str, float] | None = None) -> float:
    if not scores:
        raise ValueError("no anti-spoof scores to fuse")
    if rule == "mean":
        return fuse_mean(scores)
    if rule == "min":
        return fuse_min(scores)
    if rule == "weighted":
        return fuse_weighted(scores, weights or {})
    raise ValueError(f"unknown fusion rule {rule!r}; expected mean, min or weighted")


def decide(score: float, threshold: float) -> bool:
    return score >= threshold
