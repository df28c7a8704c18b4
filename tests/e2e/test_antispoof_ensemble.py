"""The optional three-model ensemble (MiniFASNet pair + SuriAI MiniFASNetV2-SE) served by the real
Bento, configured only through the environment: ``mean`` and ``min`` fusion on the embedded
backend, and both through a real tritonserver (same per-model scores as embedded).

Four Bento start-ups (one worker each) and the session's tritonserver.
"""

from __future__ import annotations

import json
from typing import Iterator

import httpx
import pytest

from e2e_conftest import REFERENCE_SCORES, create_key, read_bytes, start_server, triton_env, F1, F2, T1

ENSEMBLE = ("minifasnet_v2", "minifasnet_v1se", "suriai_minifasnetv2se")
LIVE = {"T1": True, "F1": False, "F2": False}
IMAGES = {"T1": T1, "F1": F1, "F2": F2}
PAIR_REFERENCE = {"T1": 0.9936, **REFERENCE_SCORES}  # Silent-Face reference (pair mean), tests/e2e/conftest.py
RULES = {"mean": lambda s: sum(s) / len(s), "min": min}


def ensemble_env(fusion: str) -> dict[str, str]:
    return {
        "LIVENESS_ANTISPOOF_MODELS": json.dumps(list(ENSEMBLE)),
        "LIVENESS_FUSION": fusion,
        "LIVENESS_WORKERS": "1",
        "LIVENESS_CHALLENGES_ENABLED": "false",
        "LIVENESS_VERIFICATION_ENABLED": "false",
    }


def answers(url: str, key: str) -> dict[str, dict]:
    out = {}
    with httpx.Client(base_url=url, timeout=60) as c:
        for name, path in IMAGES.items():
            r = c.post("/v1/liveness", content=read_bytes(path), headers={"X-API-Key": key, "content-type": "image/jpeg"})
            assert r.status_code == 200, (name, r.text)
            out[name] = r.json()
    return out


def check(body: dict, name: str, fusion: str) -> None:
    scores = body["model_scores"]
    assert list(scores) == list(ENSEMBLE), scores
    assert [m["name"] for m in body["models"]] == ["retinaface", *ENSEMBLE]
    assert all(m["version"] == 1 for m in body["models"])
    assert body["score"] == pytest.approx(RULES[fusion](list(scores.values())), abs=2e-6), (name, fusion, body)
    assert body["is_live"] is LIVE[name] and body["decision"] == ("live" if LIVE[name] else "spoof"), (name, body)
    # The pair's own scores do not move when a third model joins.
    pair = (scores["minifasnet_v2"] + scores["minifasnet_v1se"]) / 2
    assert pair == pytest.approx(PAIR_REFERENCE[name], abs=1e-3), (name, pair)


@pytest.fixture(scope="module")
def ensemble_key(db_path):
    return create_key(db_path, 100)


@pytest.fixture(scope="module")
def embedded_answers(db_path, e2e_dir, ensemble_key) -> Iterator[dict[str, dict[str, dict]]]:
    """{fusion: {image: body}} from one embedded Bento per rule (started, asked, stopped)."""
    got = {}
    for fusion in RULES:
        srv = start_server(db_path, e2e_dir, ensemble_env(fusion))
        try:
            got[fusion] = answers(srv.url, ensemble_key)
        finally:
            srv.stop()
    yield got


@pytest.mark.parametrize("fusion", list(RULES))
def test_ensemble_served_embedded(embedded_answers, fusion):
    for name, body in embedded_answers[fusion].items():
        check(body, name, fusion)
    summary = {n: (b["score"], b["model_scores"]) for n, b in embedded_answers[fusion].items()}
    print(f"\n{fusion}: {summary}")


def test_rules_see_the_same_model_scores(embedded_answers):
    for name in IMAGES:
        a, b = embedded_answers["mean"][name], embedded_answers["min"][name]
        assert a["model_scores"] == b["model_scores"] and a["models"] == b["models"]
        assert b["score"] <= a["score"]


@pytest.mark.triton
@pytest.mark.parametrize("fusion", list(RULES))
def test_ensemble_served_through_triton(triton_server, triton_repository, db_path, e2e_dir, ensemble_key,
                                        embedded_answers, fusion):
    srv = start_server(db_path, e2e_dir, triton_env(triton_server, triton_repository, **ensemble_env(fusion)))
    try:
        got = answers(srv.url, ensemble_key)
    finally:
        srv.stop()
    for name, body in got.items():
        check(body, name, fusion)
        ref = embedded_answers[fusion][name]
        assert body["models"] == ref["models"]  # same names, versions and digests
        for model, p in body["model_scores"].items():
            assert p == pytest.approx(ref["model_scores"][model], abs=1e-4), (name, model)
        assert body["decision"] == ref["decision"]
