"""Face verification (liveness.recognition) on the real models and the dev verification set."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from converters.models import MOBILEFACENET_SRC, _aligned_faces
from liveness.detection.base import Face
from liveness.errors import MODEL_UNAVAILABLE, MULTIPLE_FACES, NO_FACE, LivenessError
from liveness.geometry.pose import keypoint_pose as head_pose
from liveness.inference.embedded import EmbeddedBackend
from liveness.inference.repository import load_config
from liveness.recognition import (
    ARCFACE_TEMPLATE,
    DEFAULT_THRESHOLD,
    FaceTemplate,
    FaceVerifier,
    MobileFaceNet,
    align_face,
    assess,
    cosine,
    similarity_transform,
)
from liveness.recognition.align import transform_points
from liveness.rollout.validate import validate_version
from tests.conftest import SOURCES, run

MODEL = "mobilefacenet"


@pytest.fixture(scope="module")
def verification(media):
    return media / "verification"


@pytest.fixture(scope="module")
def backend(model_repository):
    b = EmbeddedBackend(model_repository)
    for m in ("yunet", MODEL):
        b.load_sync(m, 1)
    b.mark_ready()
    yield b
    b.close()


@pytest.fixture(scope="module")
def executor():
    with ThreadPoolExecutor(max_workers=2) as ex:
        yield ex


VERSIONS = {"yunet": 1, MODEL: 1}


@pytest.fixture(scope="module")
def verifier(backend, executor):
    return FaceVerifier(backend, executor, threshold=DEFAULT_THRESHOLD)


@pytest.fixture(scope="module")
def images(verification):
    with open(verification / "identities.csv", newline="") as f:
        ids = {r["file"]: r["identity_group"] for r in csv.DictReader(f)}
    return {name: (cv2.imread(str(verification / name)), group) for name, group in ids.items()}


@pytest.fixture(scope="module")
def templates(verifier, images):
    async def go():
        return {name: await verifier.reference(img, VERSIONS) for name, (img, _) in images.items()}

    return run(go())


def side_by_side(a: np.ndarray, b: np.ndarray, height: int = 512) -> np.ndarray:
    fit = [cv2.resize(x, (round(x.shape[1] * height / x.shape[0]), height), interpolation=cv2.INTER_AREA) for x in (a, b)]
    return np.hstack(fit)


# -- the converted model -----------------------------------------------------------------------


def test_built_model_has_a_dynamic_batch_and_matches_upstream(model_repository):
    path = model_repository / MODEL / "1" / "model.onnx"
    m = onnx.load(str(path))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert m.graph.output[0].type.tensor_type.shape.dim[0].dim_param
    assert "Reshape" not in {n.op_type for n in m.graph.node}  # the view(1, -1) became a Flatten

    x = _aligned_faces(SOURCES)  # 11 real faces, YuNet-aligned, upstream preprocessing
    upstream = ort.InferenceSession(str(SOURCES / MOBILEFACENET_SRC), providers=["CPUExecutionProvider"])
    ours = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = np.concatenate([upstream.run(None, {"input0": x[i : i + 1]})[0] for i in range(len(x))])
    got = ours.run(None, {"input0": x})[0]
    assert got.shape == (len(x), 128)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    norms = np.linalg.norm(ref, axis=1)
    assert norms.min() > 10 and norms.max() < 30  # raw, not normalised (MANIFEST: ~18-21)


def test_repository_entry_config_and_report(model_repository):
    cfg = load_config(model_repository / MODEL)
    assert cfg.max_batch_size == 16 and cfg.max_queue_delay_us == 0
    assert [t.name for t in cfg.inputs] == ["input0"] and cfg.inputs[0].dims == (3, 112, 112)
    assert [t.name for t in cfg.outputs] == ["output0"] and cfg.outputs[0].dims == (128,)
    assert cfg.param("role") == "embedder" and cfg.param("color") == "RGB"
    tpl = np.array([float(v) for v in cfg.param("template").split(",")]).reshape(5, 2)
    np.testing.assert_array_equal(tpl, ARCFACE_TEMPLATE)
    report = json.loads((model_repository / "build_report.json").read_text())["models"][MODEL]
    assert report["role"] == "embedder" and max(report["parity_max_abs_diff"].values()) <= 1e-4
    v = validate_version(model_repository, MODEL, 1)  # the rollout's pre-traffic parity check
    assert v.inputs == 8 and v.max_diff <= 1e-4


def test_from_config_and_preprocessing(model_repository):
    emb = MobileFaceNet.from_config(load_config(model_repository / MODEL))
    assert emb.model == MODEL and emb.size == 112
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    x = emb.preprocess(face)
    rgb = face[:, :, ::-1].astype(np.float64) / 255
    want = ((rgb - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
    assert x.dtype == np.float32 and x.shape == (3, 112, 112)
    np.testing.assert_allclose(x, want, atol=1e-5)
    e = emb.postprocess(np.arange(1, 129, dtype=np.float32))
    assert e.shape == (128,) and e.dtype == np.float32 and abs(np.linalg.norm(e) - 1) < 1e-6
    with pytest.raises(ValueError):
        emb.preprocess(face[:100])


# -- alignment ---------------------------------------------------------------------------------


def test_similarity_transform_is_the_least_squares_similarity():
    rng = np.random.default_rng(1)
    for _ in range(20):
        src = rng.uniform(0, 500, (5, 2))
        a, t = rng.uniform(0.2, 3), rng.uniform(-np.pi, np.pi)
        true = np.array([[a * np.cos(t), -a * np.sin(t), 40], [a * np.sin(t), a * np.cos(t), -7]])
        dst = transform_points(true, src) + rng.normal(0, 2, (5, 2))
        m = similarity_transform(src, dst)
        # Closed-form linear least squares over (a, b, tx, ty): the same objective.
        rows = np.concatenate([np.c_[src[:, 0], -src[:, 1], np.ones(5), np.zeros(5)], np.c_[src[:, 1], src[:, 0], np.zeros(5), np.ones(5)]])
        p = np.linalg.lstsq(rows, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
        np.testing.assert_allclose(m, [[p[0], -p[1], p[2]], [p[1], p[0], p[3]]], atol=1e-8)
    # A mirrored face is never fitted with a reflection.
    mirrored = ARCFACE_TEMPLATE * [-1, 1]
    assert np.linalg.det(similarity_transform(mirrored, ARCFACE_TEMPLATE)[:, :2]) > 0


def test_align_face_puts_known_keypoints_on_the_template():
    # Five dots placed by a known similarity; after alignment they must sit on the template.
    true = np.array([[2.5 * np.cos(0.4), -2.5 * np.sin(0.4), 200], [2.5 * np.sin(0.4), 2.5 * np.cos(0.4), 90]])
    pts = np.round(transform_points(true, ARCFACE_TEMPLATE))  # template -> image, whole pixels
    img = np.zeros((600, 600, 3), np.uint8)
    for x, y in pts.astype(int):
        cv2.circle(img, (x, y), 6, (255, 255, 255), -1)
    aligned = align_face(img, pts)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    grey = aligned[:, :, 0].astype(np.float64)
    for tx, ty in ARCFACE_TEMPLATE:
        y0, x0 = int(ty) - 5, int(tx) - 5
        patch = grey[y0 : y0 + 11, x0 : x0 + 11]
        ys, xs = np.mgrid[y0 : y0 + 11, x0 : x0 + 11]
        cx, cy = (patch * xs).sum() / patch.sum(), (patch * ys).sum() / patch.sum()
        assert abs(cx - tx) < 0.6 and abs(cy - ty) < 0.6
    # Outside the image: black.
    assert align_face(img, pts + 2000).max() == 0


def test_alignment_maps_real_keypoints_near_the_template(templates):
    for name, t in templates.items():
        m = similarity_transform(t.face.keypoints, ARCFACE_TEMPLATE)
        err = np.linalg.norm(transform_points(m, t.face.keypoints) - ARCFACE_TEMPLATE, axis=1)
        # The residual of a 4-dof fit to real faces (112-px template units; measured 1-3 px on the
        # eyes, up to ~5.5 on the corners of a broad smile and ~7 on the nose of a turned head).
        assert err[:2].max() < 3.5 and err.mean() < 4.5 and err.max() < 8.0, (name, err)


# -- matching ----------------------------------------------------------------------------------


def test_pairs_csv_decisions_at_the_default_threshold(verifier, templates, verification):
    with open(verification / "pairs.csv", newline="") as f:
        pairs = [(r["file_a"], r["file_b"], r["same_person"] == "yes") for r in csv.DictReader(f)]
    assert len(pairs) == 17
    for a, b, same in pairs:
        r = verifier.match(templates[a].embedding, templates[b].embedding)
        assert r.is_identical is same, (a, b, r)
        assert r.match_confidence == pytest.approx(max(0.0, r.cosine))
        assert (r.cosine > 0.65) if same else (r.cosine < 0.25), (a, b, r.cosine)  # MANIFEST: 0.725-0.876 / -0.03-0.12


def test_all_55_pairs_are_separated(verifier, templates, images):
    wrong = [
        (a, b) for a, b in itertools.combinations(sorted(images), 2)
        if verifier.match(templates[a], templates[b]).is_identical != (images[a][1] == images[b][1])
    ]
    assert not wrong


def test_match_semantics(verifier):
    e = np.zeros(128, np.float32)
    e[0] = 1

    def at(c: float) -> np.ndarray:  # a unit vector at cosine c to e
        v = np.zeros(128)
        v[0], v[1] = c, np.sqrt(1 - c * c)
        return v

    f = at(DEFAULT_THRESHOLD)
    assert verifier.match(e, e).is_identical and verifier.match(e, e).match_confidence == pytest.approx(1.0)
    assert verifier.match(e, at(DEFAULT_THRESHOLD + 1e-9)).is_identical  # cosine >= threshold -> identical
    assert not verifier.match(e, at(DEFAULT_THRESHOLD - 1e-6)).is_identical
    assert verifier.match(e, at(0.3)).match_confidence == pytest.approx(0.3)
    r = verifier.match(e, -e)
    assert not r.is_identical and r.match_confidence == 0.0 and r.cosine == pytest.approx(-1.0)
    assert cosine(e * 5, f) == pytest.approx(DEFAULT_THRESHOLD, abs=1e-6)


def test_templates_are_normalised_and_versioned(templates, backend):
    t = next(iter(templates.values()))
    assert isinstance(t, FaceTemplate)
    assert t.embedding.shape == (128,) and t.embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(t.embedding)) - 1) < 1e-5
    assert t.model == backend.version_info(MODEL, 1) and t.detector == backend.version_info("yunet", 1)
    assert t.face.keypoints is not None and t.face.keypoints.shape == (5, 2)
    assert {"detect", "embed"} <= set(t.timings_ms)


def test_batch_embedding_equals_single_embeddings(verifier, images):
    async def go():
        faces = []
        for img, _ in images.values():
            (face, *_) = await verifier.detect(img, VERSIONS)
            faces.append(align_face(img, face.keypoints))
        batch = await verifier.embed_aligned(faces, VERSIONS)
        single = np.stack([(await verifier.embed_aligned([a], VERSIONS))[0] for a in faces])
        return batch, single

    batch, single = run(go())
    assert batch.shape == (len(images), 128)
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_concurrent_references_are_batched_and_identical(verifier, images, templates):
    async def go():
        return await asyncio.gather(*(verifier.reference(img, VERSIONS) for img, _ in images.values()))

    for name, t in zip(images, run(go())):
        np.testing.assert_allclose(t.embedding, templates[name].embedding, atol=1e-5)


# -- reference / probe -------------------------------------------------------------------------


def test_reference_without_a_face_is_no_face(verifier):
    for blank in (np.zeros((480, 640, 3), np.uint8), np.full((300, 300, 3), 200, np.uint8)):
        with pytest.raises(LivenessError) as e:
            run(verifier.reference(blank, VERSIONS))
        assert e.value.kind is NO_FACE


def test_reference_with_two_faces_is_multiple_faces(verifier, images):
    two = side_by_side(images["deepface_img5.jpg"][0], images["deepface_img20.jpg"][0])
    with pytest.raises(LivenessError) as e:
        run(verifier.reference(two, VERSIONS))
    assert e.value.kind is MULTIPLE_FACES and e.value.details["faces"] == 2


def test_probe_follows_the_target_face(verifier, images, templates):
    a, b = images["deepface_img5.jpg"][0], images["deepface_img20.jpg"][0]
    two = side_by_side(a, b)
    faces = run(verifier.detect(two, VERSIONS))
    assert len(faces) == 2
    left, right = sorted(faces, key=lambda f: f.x)
    # A target box like RetinaFace's: same face, other convention (shifted and a bit larger).
    for face, name in ((left, "deepface_img5.jpg"), (right, "deepface_img20.jpg")):
        target = Face(face.x - 0.05 * face.w, face.y - 0.1 * face.h, face.w * 1.1, face.h * 1.15, 0.99)
        probe = run(verifier.probe(two, VERSIONS, target))
        assert probe is not None and probe.face.x == face.x
        assert verifier.match(templates[name], probe).is_identical
    biggest = max(faces, key=lambda f: f.area)
    assert run(verifier.probe(two, VERSIONS, None)).face.x == biggest.x
    assert run(verifier.probe(two, VERSIONS, Face(0, 0, 20, 20, 0.9))) is None  # no face there
    assert run(verifier.probe(np.zeros((200, 200, 3), np.uint8), VERSIONS, None)) is None


def test_unrouted_model_is_model_unavailable(verifier, images):
    with pytest.raises(LivenessError) as e:
        run(verifier.reference(images["deepface_img5.jpg"][0], {"yunet": 1}))
    assert e.value.kind is MODEL_UNAVAILABLE


# -- quality for recognition -------------------------------------------------------------------


def test_dev_photos_are_high_or_medium_quality(templates):
    levels = {name: t.quality.level for name, t in templates.items()}
    assert set(levels.values()) <= {"high", "medium"}, levels
    assert list(levels.values()).count("high") >= 9, levels
    for t in templates.values():
        assert (t.quality.level == "high") == (t.quality.reasons == ())


def _degraded(verifier, img: np.ndarray, kind: str):
    if kind == "blur":
        img = cv2.GaussianBlur(img, (0, 0), 0.01 * max(img.shape[:2]))
    elif kind == "tiny":
        (face, *_) = run(verifier.detect(img, VERSIONS))
        s = 15.0 / float(np.hypot(*(face.keypoints[1] - face.keypoints[0])))
        img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    elif kind == "dark":
        img = (img.astype(np.float32) * 0.15).astype(np.uint8)
    elif kind == "bright":
        img = np.clip(img.astype(np.float32) * 2.5 + 60, 0, 255).astype(np.uint8)
    return run(verifier.probe(img, VERSIONS, None))


@pytest.mark.parametrize(
    "kind,reason", [("blur", "blurry"), ("tiny", "face_too_small"), ("dark", "underexposed"), ("bright", "overexposed")]
)
def test_degraded_photos_score_lower_with_the_right_reason(verifier, images, templates, kind, reason):
    rank = {"high": 0, "medium": 1, "low": 2}
    for name in ("deepface_img5.jpg", "deepface_img8.jpg", "deepface_img20.jpg", "deepface_img24.jpg"):
        t = _degraded(verifier, images[name][0], kind)
        assert t is not None, (name, kind)
        assert rank[t.quality.level] > rank[templates[name].quality.level], (name, kind, t.quality)
        assert t.quality.level == "low" and reason in t.quality.reasons, (name, kind, t.quality)


def test_pose_and_occlusion_hints():
    frontal = ARCFACE_TEMPLATE.copy()
    frontal[2, 1] = 51.6 + 0.58 * (92.3 - 51.6)  # YuNet's frontal nose height
    yaw, pitch, roll = head_pose(frontal)
    assert abs(yaw) < 2 and abs(pitch) < 2 and abs(roll) < 1
    turned = frontal.copy()
    turned[2, 0] += 0.7 * 17.6 * np.tan(np.radians(50))  # nose moved as for 50 deg of yaw
    assert head_pose(turned)[0] == pytest.approx(50, abs=1)
    c, s = np.cos(np.radians(70)), np.sin(np.radians(70))
    rolled = (frontal - 56) @ np.array([[c, s], [-s, c]]) + 56
    assert head_pose(rolled)[2] == pytest.approx(70, abs=0.5)

    img = np.full((112, 112, 3), 128, np.uint8)
    img = cv2.randu(img, 60, 200)
    box = Face(20, 25, 72, 85, 0.95, frontal)
    assert "extreme_pose" in assess(img, Face(20, 25, 72, 85, 0.95, rolled)).reasons
    assert assess(img, Face(20, 25, 72, 85, 0.95, turned)).level == "low"
    assert "possible_occlusion" in assess(img, Face(20, 25, 72, 85, 0.7, frontal)).reasons  # low detector score
    swapped = frontal[[0, 1, 3, 2, 4]]  # nose below a mouth corner: not a face's order
    assert "possible_occlusion" in assess(img, Face(20, 25, 72, 85, 0.95, swapped)).reasons
    assert "possible_occlusion" not in assess(img, box).reasons
    with pytest.raises(ValueError):
        assess(img, Face(20, 25, 72, 85, 0.95))  # no keypoints (RetinaFace)
