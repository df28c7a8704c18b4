"""Face crop rules of the anti-spoof models (config.pbtxt ``crop``), each reproduced exactly.

``silentface``: Silent-Face's crop rule (``CropImage._get_new_box``).

MiniFASNet was trained on crops made by this rule around RetinaFace boxes, so any deviation
(rounding, clamping order) shifts the scores.

``square_reflect``: SuriAI's (johnraivenolazo/face-antispoof-onnx) square crop of
``scale * max(w, h)`` centred on the box, reflected outside the image, then letterboxed.
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


# --- ``square_reflect``: SuriAI / face-antispoof-onnx (johnraivenolazo), src/inference/preprocess.py ---


def square_box(bbox: tuple[float, float, float, float], scale: float) -> tuple[int, int, int]:
    """(x, y, w, h) face box -> (x0, y0, side) of the square crop, upstream's arithmetic exactly:
    the box is truncated to whole pixels first, side = int(scale * max(w, h)), and the corner is
    int(centre - scale * max(w, h) / 2) (``int`` truncates toward zero, as upstream)."""
    x, y, w, h = (int(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"invalid face box {bbox}")
    max_dim = max(w, h)
    cx, cy = x + w / 2, y + h / 2
    return int(cx - max_dim * scale / 2), int(cy - max_dim * scale / 2), int(max_dim * scale)


def square_reflect_crop(img: np.ndarray, bbox: tuple[float, float, float, float], scale: float) -> np.ndarray:
    """The square crop around the face; what lies outside the image is BORDER_REFLECT_101 padding."""
    height, width = img.shape[:2]
    x0, y0, side = square_box(bbox, scale)
    x1, y1, x2, y2 = max(0, x0), max(0, y0), min(width, x0 + side), min(height, y0 + side)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"face box {bbox} lies outside the {width}x{height} image")
    return cv2.copyMakeBorder(
        img[y1:y2, x1:x2], y1 - y0, y0 + side - y2, x1 - x0, x0 + side - x2, cv2.BORDER_REFLECT_101
    )


def letterbox(img: np.ndarray, size: int) -> np.ndarray:
    """Keep the aspect ratio: longer side to ``size`` (Lanczos-4 up, area down), then
    BORDER_REFLECT_101 padding to size x size, centred (the odd pixel goes bottom/right)."""
    old = img.shape[:2]
    ratio = float(size) / max(old)
    new_h, new_w = int(old[0] * ratio), int(old[1] * ratio)
    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LANCZOS4 if ratio > 1.0 else cv2.INTER_AREA)
    dw, dh = size - new_w, size - new_h
    return cv2.copyMakeBorder(img, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2, cv2.BORDER_REFLECT_101)


def square_reflect_face(img: np.ndarray, bbox: tuple[float, float, float, float], scale: float, size: int) -> np.ndarray:
    """HxWx3 crop, size x size: ``square_reflect_crop`` then ``letterbox``."""
    return letterbox(square_reflect_crop(img, bbox, scale), size)
