"""Decoding only what the models need (``decode_min_side``, liveness/imaging/decode.py and
PassivePipeline.prepare): a big JPEG is decoded at 1/2, 1/4 or 1/8 in the DCT domain, chosen from
its header; EXIF orientation still applies; PNG is decoded in full; a face too small for the coarse
decode is judged on a finer one.  Against the full decode (``decode_min_side=0``, the reference
pipeline) on phone photos made from the dev media (tools/realworld_media.py ``phone_mix``: 2-12 MP,
quality 90, 8 MP and up EXIF-rotated) and on small faces in 12 MP frames: no verdict changes.
Real models, in process."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from liveness.app import LivenessApp
from liveness.imaging import decode_image, jpeg_reduction
from liveness.settings import Settings
from tests.conftest import SOURCES, run
from tools.realworld_media import dev_phone_mix, dev_realworld_set, dev_sources, phone_photo, png16


@pytest.mark.parametrize("size, min_side, expected", [
    ((4032, 3024), 960, 4), ((3264, 2448), 960, 2), ((2592, 1944), 960, 2), ((1632, 1224), 960, 1),
    ((8000, 6000), 960, 8), ((7679, 100), 960, 4), ((4032, 3024), 0, 1), ((4032, 3024), None, 1),
    ((1920, 1080), 960, 2), ((1919, 1080), 960, 1),
])
def test_the_reduction_keeps_the_longer_side_at_least_the_floor(size, min_side, expected):
    assert jpeg_reduction(*size, min_side) == expected


@pytest.fixture(scope="module")
def sources(media):
    return dev_sources(media, SOURCES)


def test_a_12mp_exif_rotated_photo_decodes_at_a_quarter_upright(sources):
    bgr, box = sources[0]["T1"]
    data = phone_photo(bgr, box, 12)  # stored 4032x3024 landscape, Orientation 6
    full = decode_image(data)
    small = decode_image(data, min_long_side=960)
    assert (full.width, full.height, full.scale) == (3024, 4032, 1)
    assert (small.width, small.height, small.scale, small.orientation) == (3024, 4032, 4, 6)
    assert small.bgr.shape == (1008, 756, 3)
    # The same picture, upright: a quarter-size area resample of the full decode differs by noise only.
    area = cv2.resize(full.bgr, (756, 1008), interpolation=cv2.INTER_AREA)
    assert float(np.abs(area.astype(np.int16) - small.bgr).mean()) < 2.0
    # A given scale wins over the floor (the pipeline's finer re-decode).
    assert decode_image(data, min_long_side=960, scale=2).bgr.shape == (2016, 1512, 3)


def test_png_is_decoded_in_full(sources):
    bgr, _ = sources[0]["T1"]
    big = cv2.resize(bgr, (2400, 3200), interpolation=cv2.INTER_CUBIC)
    img = decode_image(png16(big), min_long_side=960)
    assert (img.scale, img.bgr.shape) == (1, (3200, 2400, 3))


@pytest.fixture(scope="module")
def apps(model_repository):
    made = {m: LivenessApp(Settings(model_repository=model_repository, auth_enabled=False, decode_min_side=m))
            for m in (0, 960)}
    yield made
    for a in made.values():
        a.close()


def judged(app, data):
    return run(app.check_image(None, data))


def test_phone_photos_keep_their_verdicts(apps, media):
    """40 photos (10 sources x 2/5/8/12 MP): measured max |score change| 0.029, no flips."""
    changed = {}
    for s in dev_phone_mix(media, SOURCES):
        full, reduced = judged(apps[0], s.data), judged(apps[960], s.data)
        assert reduced.is_live == full.is_live == (s.label == "real"), s.name
        assert reduced.image_size == full.image_size
        # The box is reported in the full photo's pixels.
        for a, b in zip(reduced.face.bbox, full.face.bbox):
            assert abs(a - b) <= 0.03 * full.face.w, (s.name, reduced.face.bbox, full.face.bbox)
        changed[s.name] = abs(reduced.score - full.score)
    assert max(changed.values()) <= 0.05, changed


def test_small_faces_are_judged_on_a_fine_decode(apps, media):
    """A 120 px face in a 12 MP frame would be 30 px at a quarter: it is decoded again in full and
    judged exactly as the reference pipeline does; 200 and 320 px faces get at least 2 x
    min_face_size (128 px) of face and keep their verdicts."""
    for s in (s for s in dev_realworld_set(media, SOURCES) if s.condition == "small_face"):
        full, reduced = judged(apps[0], s.data), judged(apps[960], s.data)
        if s.name.endswith("/120px"):
            assert reduced.score == full.score and reduced.face.bbox == full.face.bbox, s.name
        assert reduced.is_live == full.is_live, (s.name, reduced.score, full.score)
