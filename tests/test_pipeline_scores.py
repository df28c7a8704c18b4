"""Scores on the real dev media through the real models, pinned to the Silent-Face reference."""

from __future__ import annotations


import cv2
import numpy as np
import onnxruntime as ort
import pytest

from converters.reference import ReferenceDetector
from liveness.antispoof.crop import crop_face
from liveness.app import LivenessApp
from liveness.errors import MULTIPLE_FACES, NO_FACE, LivenessError
from liveness.pipeline import FACE_CUT_OFF, FACE_TOO_SMALL
from liveness.settings import Settings
from tests.conftest import SOURCES, run

# MANIFEST.md "Verification scores": pipeline B (RetinaFace, the reference) and A (YuNet).
REFERENCE_B = {"T1": 0.994, "F1": 0.072, "F2": 0.181}
REFERENCE_A = {"T1": 1.000, "F1": 0.229, "F2": 0.003}
LABELS = {"T1": True, "F1": False, "F2": False}


@pytest.fixture(scope="module")
def yunet_app(model_repository):
    a = LivenessApp(Settings(model_repository=model_repository, auth_enabled=False, detector="yunet"))
    yield a
    a.close()


def image_bytes(media, name: str) -> bytes:
    return (media / "images" / f"silentface_image_{name}.jpg").read_bytes()


def upstream_score(path) -> float:
    """The upstream pipeline, computed live: OpenCV's Caffe RetinaFace + the upstream ONNX files."""
    img = cv2.imread(str(path))
    face = ReferenceDetector(SOURCES).detect(img)
    live = []
    for onnx_file, scale in (("MiniFASNetV2.onnx", 2.7), ("MiniFASNetV1SE.onnx", 4.0)):
        sess = ort.InferenceSession(str(SOURCES / "antispoof/minifasnet" / onnx_file), providers=["CPUExecutionProvider"])
        x = crop_face(img, face.bbox, scale, 80).transpose(2, 0, 1)[None].astype(np.float32)
        z = sess.run(None, {"input": x})[0][0].astype(np.float64)
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        live.append(p[1])
    return float(np.mean(live))


@pytest.mark.parametrize("name", ["T1", "F1", "F2"])
def test_scores_match_reference_pipeline(app, media, name):
    result = run(app.check_image(None, image_bytes(media, name)))
    assert result.score == pytest.approx(upstream_score(media / "images" / f"silentface_image_{name}.jpg"), abs=1e-3)
    assert result.score == pytest.approx(REFERENCE_B[name], abs=1e-3)
    assert result.is_live is LABELS[name]
    assert set(result.model_scores) == {"minifasnet_v2", "minifasnet_v1se"}
    assert [m.name for m in result.models] == ["retinaface", "minifasnet_v2", "minifasnet_v1se"]
    assert result.quality_flags == ()


@pytest.mark.parametrize("name", ["T1", "F1", "F2"])
def test_yunet_detector_scores(yunet_app, media, name):
    result = run(yunet_app.check_image(None, image_bytes(media, name)))
    assert result.score == pytest.approx(REFERENCE_A[name], abs=1e-3)
    assert result.is_live is LABELS[name]
    assert result.face.keypoints is not None and result.face.keypoints.shape == (5, 2)


def test_no_face_is_an_error_not_a_spoof_verdict(app):
    gray = cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))[1].tobytes()
    with pytest.raises(LivenessError) as e:
        run(app.check_image(None, gray))
    assert e.value.kind is NO_FACE


def _two_faces(media) -> bytes:
    img = cv2.imread(str(media / "images" / "silentface_image_T1.jpg"))
    return cv2.imencode(".png", np.hstack([img, img[:, ::-1]]))[1].tobytes()


def test_multiple_faces_policy_reject(model_repository, media):
    a = LivenessApp(Settings(model_repository=model_repository, auth_enabled=False, multi_face_policy="reject"))
    try:
        with pytest.raises(LivenessError) as e:
            run(a.check_image(None, _two_faces(media)))
        assert e.value.kind is MULTIPLE_FACES
    finally:
        a.close()


def test_multiple_faces_policy_biggest(app, media):
    result = run(app.check_image(None, _two_faces(media)))
    assert result.faces_found == 2
    assert "multiple_faces" in result.quality_flags
    assert result.is_live


def test_quality_flag_face_cut_off(app, media):
    img = cv2.imread(str(media / "images" / "silentface_image_T1.jpg"))
    cut = img[:, 200:]  # the face starts at x~106: its left part is gone
    result = run(app.check_image(None, cv2.imencode(".png", cut)[1].tobytes()))
    assert FACE_CUT_OFF in result.quality_flags


def test_quality_flag_face_too_small(app, media):
    img = cv2.imread(str(media / "images" / "silentface_image_T1.jpg"))
    canvas = np.zeros((640, 480, 3), np.uint8)
    canvas[:160, :120] = cv2.resize(img, (120, 160), interpolation=cv2.INTER_AREA)
    result = run(app.check_image(None, cv2.imencode(".png", canvas)[1].tobytes()))
    assert FACE_TOO_SMALL in result.quality_flags


def test_exif_rotated_selfie_scores_like_upright(app, media):
    from io import BytesIO

    from PIL import Image, ImageOps

    # The dev file itself carries orientation 6; start from the pixels as a viewer shows them.
    upright = ImageOps.exif_transpose(Image.open(media / "images" / "silentface_image_T1.jpg"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated 90° CCW; viewers rotate it back clockwise
    buf = BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=95, exif=exif)
    result = run(app.check_image(None, buf.getvalue()))
    assert result.image_size == (480, 640)
    assert result.is_live and result.score > 0.9
