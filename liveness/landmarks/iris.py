"""MediaPipe iris: both eyes of a face mesh -> square eye crops -> model (one batch of 2) ->
eyelid contours and irises in image pixels.

Per eye a square centred between the eye corners (mesh 33/133 for the subject's right eye,
362/263 for the left), side 2.3 x the corner distance, resized to 64, RGB, x / 127.5 - 1.
The model expects a right eye: the left eye's crop is mirrored left-right (and its points are
un-mirrored).  Outputs: 71 x (x, y, z) eye contour + brows (the first 16 = eyelid contour),
5 x (x, y, z) iris (centre first), in 64-px crop coordinates.

Architecture ``iris`` (role ``landmarks``).  ``IrisModule.from_config`` reads these config.pbtxt
``parameters``, each defaulting to the value above for a repository written before it existed:
``crop_scale`` (2.3), ``input_size`` (64), ``color`` (RGB), ``input_divisor`` (127.5) and
``input_mean`` (1): the input is ``x / input_divisor - input_mean``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liveness.landmarks.crop import LandmarkInput, LandmarkModule, SquareCrop, square_crop, to_input

SIZE = 64
CROP_SCALE = 2.3
RIGHT_CORNERS = (33, 133)  # subject's right eye (image left in an unmirrored frontal photo)
LEFT_CORNERS = (362, 263)
EYELID_POINTS = 16
DIVISOR, MEAN = 127.5, 1.0


@dataclass(frozen=True)
class Eye:
    contour: np.ndarray  # (71, 3) image pixels; [:16] is the eyelid contour
    iris: np.ndarray  # (5, 3) image pixels; [0] is the iris centre

    @property
    def eyelid(self) -> np.ndarray:
        return self.contour[:EYELID_POINTS]


@dataclass(frozen=True)
class Eyes:
    left: Eye  # the SUBJECT's left eye
    right: Eye


def crop_eye(
    bgr: np.ndarray, mesh_points: np.ndarray, corners: tuple[int, int], mirror: bool,
    crop_scale: float = CROP_SCALE, size: int = SIZE,
) -> tuple[np.ndarray, SquareCrop]:
    a, b = mesh_points[corners[0], :2], mesh_points[corners[1], :2]
    cx, cy = (a + b) / 2
    return square_crop(bgr, float(cx), float(cy), crop_scale * float(np.linalg.norm(a - b)), size, mirror=mirror)


@dataclass(frozen=True)
class IrisModule(LandmarkModule):
    input: LandmarkInput = LandmarkInput("iris", CROP_SCALE, SIZE, "RGB", DIVISOR, MEAN)

    architecture = "iris"


    def preprocess(self, bgr: np.ndarray, mesh_points: np.ndarray) -> tuple[np.ndarray, tuple[SquareCrop, SquareCrop]]:
        """(2, 3, S, S) float32: [subject's right eye, subject's left eye (mirrored)]."""
        right, rmeta = crop_eye(bgr, mesh_points, RIGHT_CORNERS, False, self.input.crop_scale, self.input.size)
        left, lmeta = crop_eye(bgr, mesh_points, LEFT_CORNERS, True, self.input.crop_scale, self.input.size)
        return to_input([right, left], self.input.divisor, self.input.mean, self.input.color), (rmeta, lmeta)

    @staticmethod
    def postprocess(outputs: list[np.ndarray], meta: tuple[SquareCrop, SquareCrop]) -> Eyes:
        contours = np.asarray(outputs[0], np.float64).reshape(-1, 71, 3)
        irises = np.asarray(outputs[1], np.float64).reshape(-1, 5, 3)
        right = Eye(meta[0].to_image(contours[0]), meta[0].to_image(irises[0]))
        left = Eye(meta[1].to_image(contours[1]), meta[1].to_image(irises[1]))
        return Eyes(left=left, right=right)
