"""One choose_face (liveness.detection.choose) for the pipeline and verification references, both
on the ``multi_face_min_area_ratio`` setting."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from liveness import pipeline
from liveness.detection.base import Face
from liveness.detection.choose import choose_face
from liveness.errors import MULTIPLE_FACES, NO_FACE, LivenessError
from liveness.recognition import FaceVerifier
from liveness.settings import Settings
from tests.conftest import run
from tests.test_recognition import backend, executor  # noqa: F401  (YuNet + MobileFaceNet, one thread pool)

VERSIONS = {"yunet": 1, "mobilefacenet": 1}


def test_biggest_face_and_rivals():
    big, half, small = Face(0, 0, 100, 100, 0.9), Face(200, 0, 50, 50, 0.9), Face(300, 0, 40, 40, 0.9)
    assert choose_face([small, big, half], "biggest", 0.25) is big
    with pytest.raises(LivenessError) as e:
        choose_face([small, big, half], "reject", 0.25)  # half: area ratio 0.25 counts, small (0.16) does not
    assert e.value.kind is MULTIPLE_FACES and e.value.details == {"faces": 2}
    assert str(e.value.message).endswith("exactly one person must be in the image.")
    assert choose_face([small, big, half], "reject", 0.3) is big
    with pytest.raises(LivenessError) as e:
        choose_face([big, half], "reject", 0.25, one_person="the reference image must show exactly one person")
    assert e.value.message.endswith("the reference image must show exactly one person.")
    with pytest.raises(LivenessError) as e:
        choose_face([], "biggest", 0.25)
    assert e.value.kind is NO_FACE


def test_the_pipeline_re_exports_it():
    assert pipeline.choose_face is choose_face


def test_the_setting_applies_to_verification_references(backend, executor, model_repository, media):
    a = cv2.imread(str(media / "verification" / "deepface_img5.jpg"))
    b = cv2.imread(str(media / "verification" / "deepface_img20.jpg"))
    height = 512
    two = np.hstack([cv2.resize(x, (round(x.shape[1] * height / x.shape[0]), height), interpolation=cv2.INTER_AREA)
                     for x in (a, b)])
    default = FaceVerifier.from_settings(backend, executor, Settings(model_repository=model_repository))
    faces = run(default.detect(two, VERSIONS))
    assert len(faces) == 2
    small, big = sorted(faces, key=lambda f: f.area)
    ratio = small.area / big.area
    assert 0.25 <= ratio < 0.95  # a rival at the default ratio

    with pytest.raises(LivenessError) as e:
        run(default.reference(two, VERSIONS))
    assert e.value.kind is MULTIPLE_FACES and e.value.details["faces"] == 2
    assert "the reference image must show exactly one person" in e.value.message

    # Above the smaller face's ratio it is background, as in the liveness pipeline: the biggest wins.
    lenient = FaceVerifier.from_settings(
        backend, executor, Settings(model_repository=model_repository, multi_face_min_area_ratio=min(1.0, ratio + 0.05)))
    assert lenient.multi_face_min_area_ratio == pytest.approx(min(1.0, ratio + 0.05))
    assert run(lenient.reference(two, VERSIONS)).face.x == big.x
