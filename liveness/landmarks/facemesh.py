"""MediaPipe face mesh (468 points): face box -> square crop -> model -> points in image pixels.

Crop: a square of 1.5 x max(w, h) centred on the face box (zeros outside the image), resized
to 192, RGB, x / 127.5 - 1, NCHW.  Outputs: ``conv2d_20`` 468 x (x, y, z) in 192-px crop
coordinates, ``conv2d_30`` the face-presence logit.

Architecture ``facemesh`` (role ``landmarks``).  ``FaceMeshModule.from_config`` reads these
config.pbtxt ``parameters``, each defaulting to the value above for a repository written before
it existed: ``crop_scale`` (1.5), ``input_size`` (192), ``color`` (RGB), ``input_divisor``
(127.5) and ``input_mean`` (1): the input is ``x / input_divisor - input_mean``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liveness.detection.base import Face
from liveness.landmarks.crop import LandmarkInput, LandmarkModule, SquareCrop, square_crop, to_input

SIZE = 192
CROP_SCALE = 1.5
N_POINTS = 468
DIVISOR, MEAN = 127.5, 1.0


@dataclass(frozen=True)
class FaceMesh:
    points: np.ndarray  # (468, 3) float64: x, y in image pixels, z (relative depth, smaller = nearer) in the same scale
    presence_logit: float

    @property
    def presence(self) -> float:
        return float(1.0 / (1.0 + np.exp(-self.presence_logit)))


def crop_for(bgr: np.ndarray, face: Face, crop_scale: float = CROP_SCALE, size: int = SIZE) -> tuple[np.ndarray, SquareCrop]:
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    return square_crop(bgr, cx, cy, crop_scale * max(face.w, face.h), size)


@dataclass(frozen=True)
class FaceMeshModule(LandmarkModule):
    input: LandmarkInput = LandmarkInput("facemesh", CROP_SCALE, SIZE, "RGB", DIVISOR, MEAN)

    architecture = "facemesh"


    def preprocess(self, bgr: np.ndarray, face: Face) -> tuple[np.ndarray, SquareCrop]:
        """(1, 3, S, S) float32 input and the crop map."""
        crop, meta = crop_for(bgr, face, self.input.crop_scale, self.input.size)
        return to_input([crop], self.input.divisor, self.input.mean, self.input.color), meta

    @staticmethod
    def postprocess(outputs: list[np.ndarray], meta: SquareCrop) -> FaceMesh:
        """Outputs for ONE face (conv2d_20, conv2d_30) -> mesh in image pixels."""
        pts = np.asarray(outputs[0], np.float64).reshape(-1, N_POINTS, 3)[0]
        return FaceMesh(meta.to_image(pts), float(np.asarray(outputs[1]).reshape(-1)[0]))
