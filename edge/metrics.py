"""Prometheus metrics of the service (BentoML's ``/metrics``) and the observers that feed them."""

from __future__ import annotations

import logging
from typing import Any

import bentoml

log = logging.getLogger("liveness")

BATCH_SIZE = bentoml.metrics.Histogram(
    name="liveness_batch_size",
    documentation="Rows per model invocation (dynamic batching)",
    labelnames=["model", "version"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
)
MODEL_SECONDS = bentoml.metrics.Histogram(
    name="liveness_model_seconds",
    documentation="Wall time of one batched model invocation",
    labelnames=["model", "version"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
)
VERSION_REQUESTS = bentoml.metrics.Counter(
    name="liveness_model_requests",
    documentation="Decisions each model version took part in",
    labelnames=["model", "version"],
)
VERSION_LATENCY = bentoml.metrics.Histogram(
    name="liveness_model_request_seconds",
    documentation="Pipeline time of the requests each model version served",
    labelnames=["model", "version"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
VERSION_SCORES = bentoml.metrics.Histogram(
    name="liveness_model_live_probability",
    documentation="Live-class probability per anti-spoof model version (judge a canary by it)",
    labelnames=["model", "version"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)
SHADOW_DIFF = bentoml.metrics.Histogram(
    name="liveness_shadow_abs_diff",
    documentation="|p_live(shadow) - p_live(serving)| on sampled requests",
    labelnames=["model", "stable", "candidate"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
DECISIONS = bentoml.metrics.Counter(
    name="liveness_decisions",
    documentation="Liveness answers by endpoint and outcome",
    labelnames=["endpoint", "outcome"],
)


def decision(endpoint: str, outcome: str) -> None:
    """One answer of ``endpoint``: live / spoof / a verdict, or the error code."""
    DECISIONS.labels(endpoint=endpoint, outcome=outcome).inc()


def observe_batch(model: str, version: int, rows: int, seconds: float) -> None:
    BATCH_SIZE.labels(model=model, version=str(version)).observe(rows)
    MODEL_SECONDS.labels(model=model, version=str(version)).observe(seconds)
    log.debug("batch model=%s version=%d rows=%d %.1fms", model, version, rows, seconds * 1000)


def observe_result(result: Any) -> None:
    seconds = sum(result.timings_ms.values()) / 1000
    for m in result.models:
        labels = {"model": m.name, "version": str(m.version)}
        VERSION_REQUESTS.labels(**labels).inc()
        VERSION_LATENCY.labels(**labels).observe(seconds)
        if m.name in result.model_scores:
            VERSION_SCORES.labels(**labels).observe(result.model_scores[m.name])


def observe_shadow(model: str, stable: int, candidate: int, p_stable: float, p_candidate: float) -> None:
    SHADOW_DIFF.labels(model=model, stable=str(stable), candidate=str(candidate)).observe(abs(p_stable - p_candidate))
