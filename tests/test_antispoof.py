"""Anti-spoof models as data: config parameters (AntiSpoofSpec), the generic module against the
upstream preprocessing of MiniFASNet and SuriAI, fusion rules, and an operator's own model served
with no code change.  Real models, real ONNX Runtime."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.reference import ReferenceDetector, reference_crops, reference_suriai_crops, suriai_input
from liveness.antispoof.model import AntiSpoofModel
from liveness.antispoof.spec import AntiSpoofConfigError, AntiSpoofSpec
from liveness.decision import fuse
from liveness.detection.base import Face
from liveness.inference.repository import TensorInfo, load_config, load_repository
from liveness.rollout.validate import ValidationError, validate_version
from liveness.settings import Settings
from tests.conftest import SOURCES, run

SURIAI = "suriai_minifasnetv2se"
SURIAI_SRC = SOURCES / "antispoof" / "suriai_minifasnetv2se" / "best_model_97.80.onnx"
PAIR = ("minifasnet_v2", "minifasnet_v1se")


def dev_images(media: Path) -> list[Path]:
    return sorted((media / "images").glob("*.jpg")) + sorted((media / "verification").glob("*.jpg"))


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- AntiSpoofSpec


def test_specs_of_the_built_models(model_repository):
    repo = load_repository(model_repository)
    v2, v1se, suriai = (AntiSpoofSpec.from_config(repo[m]) for m in (*PAIR, SURIAI))
    assert (v2.crop, v2.crop_scale, v2.input_size, v2.color, v2.live_class, v2.activation, v2.num_classes) == (
        "silentface", 2.7, 80, "BGR", 1, "softmax", 3)
    assert (v2.input_divisor, v2.input_mean, v2.input_std) == (1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert v1se.crop_scale == 4.0 and v1se.crop == "silentface"
    assert (suriai.crop, suriai.crop_scale, suriai.input_size, suriai.color, suriai.input_divisor) == (
        "square_reflect", 1.5, 128, "RGB", 255.0)
    assert (suriai.live_class, suriai.activation, suriai.num_classes) == (0, "sigmoid_diff", 2)


@pytest.fixture(scope="module")
def v2_config(model_repository):
    return load_config(model_repository / "minifasnet_v2")


def with_params(cfg, drop: tuple[str, ...] = (), **params):
    p = {k: v for k, v in cfg.parameters.items() if k not in drop}
    p.update(params)
    return dataclasses.replace(cfg, parameters=p)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(drop=("crop",)), "parameter 'crop' is missing"),
        (dict(crop="centre"), "parameter 'crop' is 'centre'; expected one of silentface, square_reflect"),
        (dict(color="YUV"), "parameter 'color' is 'YUV'; expected one of BGR, RGB"),
        (dict(drop=("activation",)), "parameter 'activation' is missing"),
        (dict(activation="sigmoid_diff"), "activation 'sigmoid_diff' needs 2 classes"),
        (dict(live_class="3"), "parameter 'live_class' is 3, but output 'output' has only 3 classes"),
        (dict(live_class="one"), "parameter 'live_class' is 'one', not an integer"),
        (dict(crop_scale="-2"), "parameter 'crop_scale' is '-2'; expected a positive"),
        (dict(crop_scale="nan"), "parameter 'crop_scale' is 'nan'"),
        (dict(input_size="96"), r"dims \[3, 80, 80\] do not match \[3, 96, 96\]"),
        (dict(input_divisor="0"), "parameter 'input_divisor' is '0'"),
        (dict(input_mean="1,2"), "parameter 'input_mean' is '1,2'; expected 1 or 3 finite numbers"),
        (dict(input_std="1,0,1"), "parameter 'input_std' is '1,0,1'; every value must be > 0"),
        (dict(role="detector"), "parameter 'role' is 'detector': not an anti-spoof model"),
    ],
)
def test_spec_errors_name_the_model_and_the_parameter(v2_config, change, message):
    change = dict(change)
    drop = change.pop("drop", ())
    with pytest.raises(AntiSpoofConfigError, match=message) as e:
        AntiSpoofSpec.from_config(with_params(v2_config, drop, **change))
    assert "anti-spoof model 'minifasnet_v2'" in str(e.value) and "config.pbtxt" in str(e.value)
    assert "Adding your own anti-spoof model" in str(e.value)


def test_spec_errors_on_the_tensors(v2_config):
    with pytest.raises(AntiSpoofConfigError, match="max_batch_size is 0"):
        AntiSpoofSpec.from_config(dataclasses.replace(v2_config, max_batch_size=0))
    with pytest.raises(AntiSpoofConfigError, match="expected \\[K\\] class logits"):
        AntiSpoofSpec.from_config(dataclasses.replace(v2_config, outputs=(TensorInfo("output", (1,), "TYPE_FP32"),)))
    with pytest.raises(AntiSpoofConfigError, match="is TYPE_UINT8; expected TYPE_FP32"):
        AntiSpoofSpec.from_config(dataclasses.replace(v2_config, inputs=(TensorInfo("input", (3, 80, 80), "TYPE_UINT8"),)))
    spec = AntiSpoofSpec.from_config(
        dataclasses.replace(v2_config, inputs=(TensorInfo("input", (3, -1, -1), "TYPE_FP32"),)))
    assert spec.input_size == 80  # variable spatial dims take input_size
    one = AntiSpoofSpec.from_config(with_params(v2_config, input_mean="0.5", input_std="2"))
    assert one.input_mean == (0.5, 0.5, 0.5) and one.input_std == (2.0, 2.0, 2.0)


# ----------------------------------------------------------------------------- MiniFASNet = config


@pytest.mark.parametrize("model, scale", [("minifasnet_v2", 2.7), ("minifasnet_v1se", 4.0)])
def test_minifasnet_preprocessing_is_upstreams_exactly(model_repository, media, model, scale):
    m = AntiSpoofModel.from_config(load_config(model_repository / model))
    det = ReferenceDetector(SOURCES)
    images = dev_images(media)
    ref = reference_crops(SOURCES, images, scale)  # Silent-Face: RetinaFace box, CropImage, raw BGR
    ours = np.concatenate([m.preprocess(cv2.imread(str(p)), Face(*det.detect(cv2.imread(str(p))).bbox, 1.0)) for p in images])
    assert ours.dtype == np.float32 and ours.shape == (len(images), 3, 80, 80)
    assert np.array_equal(ours, ref)
    # Post-processing: softmax, class 1, bit for bit what upstream computes.
    src = {"minifasnet_v2": "MiniFASNetV2.onnx", "minifasnet_v1se": "MiniFASNetV1SE.onnx"}[model]
    upstream = session(SOURCES / "antispoof" / "minifasnet" / src)
    z = np.concatenate([upstream.run(None, {"input": ref[i : i + 1]})[0] for i in range(len(ref))]).astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    assert np.array_equal(m.postprocess(z), (e / e.sum(axis=1, keepdims=True))[:, 1])


# ----------------------------------------------------------------------------- SuriAI


@pytest.fixture(scope="module")
def suriai(model_repository) -> AntiSpoofModel:
    return AntiSpoofModel.from_config(load_config(model_repository / SURIAI))


def test_suriai_preprocessing_matches_the_upstream_reimplementation(suriai, media):
    det = ReferenceDetector(SOURCES)
    images = dev_images(media)
    ref = reference_suriai_crops(SOURCES, images)
    ours = []
    for p in images:
        img = cv2.imread(str(p))
        ours.append(suriai.preprocess(img, Face(*det.detect(img).bbox, 1.0)))
    ours = np.concatenate(ours)
    assert ours.dtype == np.float32 and ours.shape == (len(images), 3, 128, 128)
    assert np.array_equal(ours, ref)


def test_suriai_preprocessing_on_boxes_at_and_past_the_borders(suriai, media):
    """Float boxes (truncation), odd sides (the corner rounding), boxes reaching outside the
    frame (reflect padding), tiny faces (Lanczos upscaling) and big ones (area downscaling)."""
    img = cv2.imread(str(media / "images" / "silentface_image_T1.jpg"))
    h, w = img.shape[:2]
    rng = np.random.default_rng(7)
    boxes = [(0, 0, 101, 133), (w - 90.7, h - 120.2, 90.7, 120.2), (-5.5, 10.9, 61.3, 77.1), (3, 4, 9, 11),
             (w / 2 - 20.5, h / 2 - 25.25, 41, 51), (0, 0, w - 1, h - 1)]
    for _ in range(60):
        bw, bh = rng.uniform(8, 0.9 * w), rng.uniform(8, 0.9 * h)
        boxes.append((rng.uniform(-0.2 * bw, w - 0.8 * bw), rng.uniform(-0.2 * bh, h - 0.8 * bh), bw, bh))
    for box in boxes:
        assert np.array_equal(suriai.preprocess(img, Face(*box, 1.0))[0], suriai_input(img, box)), box


def test_suriai_scores_are_upstreams(suriai, model_repository, media):
    """Served model file + generic post-processing == upstream file + upstream's sigmoid(real - spoof)."""
    x = reference_suriai_crops(SOURCES, dev_images(media))
    up = session(SURIAI_SRC).run(None, {"input": x})[0].astype(np.float64)
    ours = session(model_repository / SURIAI / "1" / "model.onnx").run(None, {"input": x})[0]
    expected = 1.0 / (1.0 + np.exp(-(up[:, 0] - up[:, 1])))
    assert np.max(np.abs(suriai.postprocess(ours) - expected)) <= 1e-6
    # and the two-class softmax the rollout validator compares is the same number
    e = np.exp(up - up.max(axis=1, keepdims=True))
    assert np.max(np.abs((e / e.sum(axis=1, keepdims=True))[:, 0] - expected)) <= 1e-12


def test_suriai_is_off_by_default_and_its_config_says_why(model_repository, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert Settings().antispoof_models == PAIR
    cfg = load_config(model_repository / SURIAI)
    assert "CelebA-Spoof" in cfg.param("licence") and "off by default" in cfg.param("licence")


@pytest.mark.parametrize("model", [*PAIR, SURIAI])
def test_rollout_validation_checks_every_antispoof_version(model_repository, model):
    for version in load_config(model_repository / model).versions:
        v = validate_version(model_repository, model, version)
        assert v.metric == "softmax" and v.max_diff <= v.tolerance and v.inputs == 8


def test_rollout_validation_refuses_a_suriai_version_with_flipped_classes(model_repository, tmp_path):
    shutil.copytree(model_repository / SURIAI, tmp_path / SURIAI)
    m = onnx.load(str(tmp_path / SURIAI / "1" / "model.onnx"))
    out = m.graph.output[0].name
    for n in m.graph.node:  # rename the logits, then swap the two columns into the old name
        n.output[:] = [o + "_raw" if o == out else o for o in n.output]
    m.graph.initializer.append(numpy_helper.from_array(np.array([1, 0], np.int64), "swap"))
    m.graph.node.append(helper.make_node("Gather", [out + "_raw", "swap"], [out], axis=1))
    (tmp_path / SURIAI / "2").mkdir()
    onnx.save(m, str(tmp_path / SURIAI / "2" / "model.onnx"))
    shutil.copy(tmp_path / SURIAI / "1" / "parity.npz", tmp_path / SURIAI / "2" / "parity.npz")
    with pytest.raises(ValidationError, match="parity .* exceeds"):
        validate_version(tmp_path, SURIAI, 2)


# ----------------------------------------------------------------------------- fusion


def test_fusion_rules():
    s = {"a": 0.9, "b": 0.2, "c": 0.7}
    assert fuse(s) == pytest.approx(0.6) and fuse(s, "mean") == fuse(s)
    assert fuse(s, "min") == 0.2
    assert fuse(s, "weighted", {"a": 2.0, "b": 1.0, "c": 1.0}) == pytest.approx((1.8 + 0.2 + 0.7) / 4)
    assert fuse(s, "weighted", {"a": 1.0, "b": 1.0, "c": 1.0}) == pytest.approx(fuse(s, "mean"))
    pair = {"minifasnet_v2": 0.9902, "minifasnet_v1se": 0.9969}  # upstream: sum of softmaxes / 2
    assert fuse(pair) == float(np.mean([0.9902, 0.9969]))
    with pytest.raises(ValueError, match="no weight for c"):
        fuse(s, "weighted", {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        fuse(s, "weighted", {"a": 1.0, "b": 0.0, "c": 1.0})
    with pytest.raises(ValueError, match="unknown fusion rule"):
        fuse(s, "max")  # type: ignore[arg-type]


def test_fusion_settings_are_validated(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    models = (*PAIR, SURIAI)
    s = Settings(antispoof_models=models, fusion="weighted", fusion_weights={"minifasnet_v2": 1, "minifasnet_v1se": 1, SURIAI: 2})
    assert s.fusion_weights[SURIAI] == 2.0
    for bad, msg in [
        (dict(fusion="weighted"), "needs a weight for every anti-spoof model; missing: minifasnet_v2"),
        (dict(fusion="weighted", fusion_weights={"minifasnet_v2": 1, "minifasnet_v1se": 1}), f"missing: {SURIAI}"),
        (dict(fusion_weights={"minifasnet_v2": -1}), "positive and finite"),
        (dict(fusion_weights={"minifasnet_v3": 1}), "minifasnet_v3, not in antispoof_models"),
        (dict(fusion="max"), "fusion"),
    ]:
        with pytest.raises(ValueError, match=msg):
            Settings(antispoof_models=models, **bad)
    with pytest.raises(ValueError, match="lists a model twice"):
        Settings(antispoof_models=("minifasnet_v2", "minifasnet_v2"))
    with pytest.raises(ValueError, match="empty"):
        Settings(antispoof_models=())
    # From the environment, as the e2e servers get them.
    monkeypatch.setenv("LIVENESS_ANTISPOOF_MODELS", '["minifasnet_v2", "suriai_minifasnetv2se"]')
    monkeypatch.setenv("LIVENESS_FUSION", "weighted")
    monkeypatch.setenv("LIVENESS_FUSION_WEIGHTS", '{"minifasnet_v2": 1.5, "suriai_minifasnetv2se": 0.5}')
    s = Settings()
    assert s.antispoof_models == ("minifasnet_v2", SURIAI) and s.fusion_weights == {"minifasnet_v2": 1.5, SURIAI: 0.5}


# ----------------------------------------------------------------------------- an operator's own model

OWN = "acme_pad"
OWN_CONFIG = """\
name: "acme_pad"
platform: "onnxruntime_onnx"
max_batch_size: 8
input { name: "pixels" data_type: TYPE_FP32 dims: [ 3, 64, 64 ] }
output { name: "logits" data_type: TYPE_FP32 dims: [ 3 ] }
dynamic_batching { max_queue_delay_microseconds: 0 }
parameters { key: "role" value { string_value: "antispoof" } }
parameters { key: "crop" value { string_value: "silentface" } }
parameters { key: "crop_scale" value { string_value: "2.0" } }
parameters { key: "input_size" value { string_value: "64" } }
parameters { key: "color" value { string_value: "RGB" } }
parameters { key: "input_divisor" value { string_value: "255" } }
parameters { key: "input_mean" value { string_value: "0.485,0.456,0.406" } }
parameters { key: "input_std" value { string_value: "0.229,0.224,0.225" } }
parameters { key: "live_class" value { string_value: "2" } }
parameters { key: "activation" value { string_value: "softmax" } }
"""
W = np.array([[0.8, -1.2, 0.5], [-0.3, 0.9, -0.7], [1.1, 0.2, -0.4]], np.float32)  # (classes, channels)
B = np.array([0.1, -0.2, 0.05], np.float32)

# The same SuriAI file, as an operator would drop in a copy under their own name, described with
# the generic 2-class softmax instead of sigmoid_diff.
COPY = "vendor_copy"
COPY_PARAMS = {"crop": "square_reflect", "crop_scale": "1.5", "input_size": "128", "color": "RGB",
               "input_divisor": "255", "live_class": "0", "activation": "softmax"}


def tiny_classifier() -> onnx.ModelProto:
    """A real (if simple) classifier graph: per-channel mean of the normalised crop, then a
    3-class linear layer.  Batch-dynamic."""
    g = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
            helper.make_node("Gemm", ["features", "W", "B"], ["logits"], transB=1),
        ],
        "acme_pad",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def copy_config(text: str, name: str, params: dict[str, str]) -> str:
    head = [line for line in text.split("parameters {")[0].splitlines() if line]
    head[0] = f'name: "{name}"'
    body = "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in params.items())
    return "\n".join(head) + "\n" + body


@pytest.fixture(scope="module")
def operator_repository(model_repository, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("operator") / "model_repository"
    for m in ("retinaface", "yunet", "minifasnet_v2"):  # the detectors (yunet: fallback pass) and one MiniFASNet
        shutil.copytree(model_repository / m, repo / m, ignore=shutil.ignore_patterns("2"))  # version 1 only
    (repo / OWN / "1").mkdir(parents=True)
    (repo / OWN / "config.pbtxt").write_text(OWN_CONFIG)
    onnx.save(tiny_classifier(), str(repo / OWN / "1" / "model.onnx"))
    (repo / COPY / "3").mkdir(parents=True)
    text = (model_repository / SURIAI / "config.pbtxt").read_text()
    (repo / COPY / "config.pbtxt").write_text(copy_config(text, COPY, COPY_PARAMS))
    shutil.copy(SURIAI_SRC, repo / COPY / "3" / "model.onnx")  # the upstream file as is, version 3
    return repo


def test_an_operators_own_models_serve_with_no_code_change(operator_repository, media, tmp_path, monkeypatch):
    from liveness.app import LivenessApp

    monkeypatch.chdir(tmp_path)  # no liveness.toml / model_policy.toml of the repo
    settings = Settings(model_repository=operator_repository, auth_enabled=False, challenges_enabled=False,
                        verification_enabled=False, antispoof_models=("minifasnet_v2", OWN, COPY), fusion="min")
    app = LivenessApp(settings)
    try:
        path = media / "images" / "silentface_image_T1.jpg"
        result = run(app.check_image(None, path.read_bytes()))
    finally:
        app.close()
    assert [(m.name, m.version) for m in result.models] == [("retinaface", 1), ("minifasnet_v2", 1), (OWN, 1), (COPY, 3)]
    assert all(len(m.sha256) == 64 for m in result.models)
    assert list(result.model_scores) == ["minifasnet_v2", OWN, COPY]
    assert result.score == min(result.model_scores.values())

    # The operator's graph, computed by hand on an independently made crop.
    img = cv2.imread(str(path))
    face = ReferenceDetector(SOURCES).detect(img)
    assert result.face.bbox == face.bbox
    crop = reference_crops(SOURCES, [img], 2.0, 64)[0][::-1]  # Silent-Face crop at 2.0, BGR -> RGB
    x = (crop / np.float32(255) - np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]) / np.array(
        [0.229, 0.224, 0.225], np.float32)[:, None, None]
    z = W.astype(np.float64) @ x.reshape(3, -1).mean(axis=1) + B
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert result.model_scores[OWN] == pytest.approx(p[2], abs=1e-5)

    # The SuriAI copy under softmax: the same p(live) upstream's sigmoid(real - spoof) gives.
    up = session(SURIAI_SRC).run(None, {"input": suriai_input(img, face.bbox)[None]})[0][0].astype(np.float64)
    assert result.model_scores[COPY] == pytest.approx(1 / (1 + np.exp(up[1] - up[0])), abs=1e-6)


def test_a_wrong_operator_config_fails_at_start_naming_model_and_parameter(operator_repository, tmp_path, monkeypatch):
    from liveness.app import LivenessApp

    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "repo"
    shutil.copytree(operator_repository, bad)
    cfg = bad / OWN / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('string_value: "softmax"', 'string_value: "softmax2"'))
    settings = Settings(model_repository=bad, auth_enabled=False, challenges_enabled=False,
                        verification_enabled=False, antispoof_models=("minifasnet_v2", OWN))
    with pytest.raises(AntiSpoofConfigError, match="'acme_pad'.*parameter 'activation' is 'softmax2'"):
        LivenessApp(settings)
