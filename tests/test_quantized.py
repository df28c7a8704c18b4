"""Version 2 of the anti-spoof models: the INT8 build, checked against float32 version 1."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import onnxruntime as ort
import pytest

from converters.models import CATALOGUE, INT8_MAX_DEV, INT8_MEAN_DEV, parity_images
from converters.reference import reference_crops
from liveness.app import LivenessApp
from liveness.inference import pbtxt
from liveness.inference.repository import load_repository
from liveness.settings import Settings
from tests.conftest import SOURCES

ANTISPOOF = ["minifasnet_v2", "minifasnet_v1se"]
LABELS = {"T1": True, "F1": False, "F2": False}


def session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def p_live(sess, x) -> np.ndarray:
    z = sess.run(None, {"input": x})[0].astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True))[:, 1]


@pytest.fixture(scope="module")
def report(model_repository):
    return json.loads((model_repository / "build_report.json").read_text())


@pytest.mark.parametrize("name", ANTISPOOF)
def test_int8_version_sits_beside_fp32_with_its_notes(model_repository, name):
    cfg = load_repository(model_repository)[name]
    assert cfg.versions == (1, 2)
    assert (model_repository / name / "2" / "QUANTIZATION.md").is_file()
    # Triton serves both versions (clients name the one they want); what they are is listed too.
    raw = pbtxt.loads((model_repository / name / "config.pbtxt").read_text())
    assert "all" in pbtxt.first(raw, "version_policy")
    assert cfg.param("versions").startswith("1: float32") and "2: INT8" in cfg.param("versions")


@pytest.mark.parametrize("name", ANTISPOOF)
def test_int8_graph_is_quantized_has_a_dynamic_batch_and_runs(model_repository, name):
    sess = session(model_repository / name / "2" / "model.onnx")
    for t in list(sess.get_inputs()) + list(sess.get_outputs()):
        assert isinstance(t.shape[0], str), f"{name} v2:{t.name} batch dim is fixed: {t.shape}"
    import onnx

    ops = {n.op_type for n in onnx.load(str(model_repository / name / "2" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = np.random.default_rng(0).uniform(0, 255, (8, 3, 80, 80)).astype(np.float32)
    batched = sess.run(None, {"input": x})[0]
    single = np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(8)])
    assert batched.shape == (8, 3)
    np.testing.assert_allclose(batched, single, atol=1e-4)


@pytest.mark.parametrize("name", ANTISPOOF)
def test_int8_p_live_on_dev_images_is_within_tolerance_and_verdicts_hold(model_repository, name):
    spec = next(s for s in CATALOGUE if s.name == name)
    imgs = parity_images(SOURCES)
    crops = reference_crops(SOURCES, imgs, float(spec.parameters["crop_scale"]))
    p1 = p_live(session(model_repository / name / "1" / "model.onnx"), crops)
    p2 = p_live(session(model_repository / name / "2" / "model.onnx"), crops)
    dev = np.abs(p2 - p1)
    assert dev.max() <= spec.variants[0].tolerance == INT8_MAX_DEV
    assert dev.mean() <= INT8_MEAN_DEV
    for i, p in enumerate(imgs):
        for k, live in LABELS.items():
            if p.name == f"silentface_image_{k}.jpg":
                assert bool(p1[i] > 0.5) is live and bool(p2[i] > 0.5) is live, (k, p1[i], p2[i])


@pytest.mark.parametrize("name", ANTISPOOF)
def test_build_report_records_deviation_and_speedup(report, model_repository, name):
    entry = report["models"][name]
    v2 = entry["variants"]["2"]
    assert v2["max_abs_dev"] <= v2["tolerance"] == INT8_MAX_DEV
    assert v2["mean_abs_dev"] <= INT8_MEAN_DEV and not v2["failures"]
    assert v2["n_crops"] >= 100 and set(v2["deviation_by_set"]) >= {"dev images", "held-out video frames"}
    assert set(v2["verdicts"]) == set(LABELS)
    for b in ("batch1", "batch8"):
        assert v2["speedup"][b] > 0 and v2["speed_ms"]["int8"][f"{b}_ms"] > 0
    from converters.build import sha256_file

    assert v2["sha256"] == sha256_file(model_repository / name / "2" / "model.onnx")
    assert entry["sha256"] == sha256_file(model_repository / name / "1" / "model.onnx")


def test_served_default_stays_fp32_and_int8_keeps_the_fused_verdicts(model_repository, media, tmp_path):
    """Through the whole service: the repo's model_policy.toml pins version 1; pinning version 2
    moves the fused score by less than the tolerance and keeps T1 live, F1/F2 spoof."""
    from liveness.rollout.policy import load_policy_file

    pinned = load_policy_file(model_repository.parent / "model_policy.toml")
    assert all(pinned[m].mode == "pin" and pinned[m].version == 1 for m in ANTISPOOF)

    policy = tmp_path / "policy.toml"
    policy.write_text("".join(f'[{m}]\nmode = "pin"\nversion = {v}\n' for m in ANTISPOOF for v in [2]))
    scores = {}
    for tag, pfile in (("fp32", model_repository.parent / "model_policy.toml"), ("int8", policy)):
        app = LivenessApp(
            Settings(
                model_repository=model_repository,
                auth_enabled=False,
                model_policy_file=pfile,
                db_path=tmp_path / f"{tag}.sqlite3",
            )
        )
        try:
            for k in LABELS:
                r = asyncio.run(app.check_image(None, (media / "images" / f"silentface_image_{k}.jpg").read_bytes()))
                used = {m.name: m.version for m in r.models}
                assert [used[m] for m in ANTISPOOF] == ([1, 1] if tag == "fp32" else [2, 2])
                scores[tag, k] = r.score
                assert r.is_live is LABELS[k], (tag, k, r.score)
        finally:
            app.close()
    for k in LABELS:
        assert abs(scores["int8", k] - scores["fp32", k]) <= INT8_MAX_DEV
