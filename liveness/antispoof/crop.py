"""Silent-Face's crop rule (``CropImage._get_new_box``), reproduced exactly.

MiniFASNet was trained on crops made by this rule around RetinaFace boxes, so any deviation
(rounding, clamping order) shifts the scores.
"""

from __future__ import annotations

import cv2
import numpy as np


def crop_box(bbox: tuple[float, float, float, float], scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) face box -> inclusive (left, top, right, bottom) of the scaled crop."""
    x, y, box_w, box_h = bbox
    scale = min((height - 1) / box_h, min((width - 1) / box_w, scale))
    new_width = box_w * scale
    new_height = box_h * scale
    center_x, center_y = box_w / 2 + x, box_h / 2 + y

    left = center_x - new_width / 2
    top = center_y - new_height / 2
    right = center_x + new_width / 2
    bottom = center_y + new_height / 2

    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > width - 1:
        left -= right - width + 1
        right = width - 1
    if bottom > height - 1:
        top -= bottom - height + 1
        bottom = height - 1
    return int(left), int(top), int(right), int(bottom)


def crop_face(img: np.ndarray, bbox: tuple[float, float, float, float], scale: float, size: int) -> np.ndarray:
    """HxWx3 BGR crop resized to size x size (bilinear), as upstream."""
    h, w = img.shape[:2]
    left, top, right, bottom = crop_box(bbox, scale, w, h)
    return cv2.resize(img[top : bottom + 1, left : right + 1], (size, size))
