"""The upstream Silent-Face reference pipeline, run with OpenCV's own Caffe importer.

Used only at build time: it gives the converters real face crops for parity checks and the
reference scores the service must reproduce.  Needs OpenCV 4.x (OpenCV 5 has no Caffe importer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from liveness.antispoof.crop import crop_face

DETECTOR_DIR = "detection/retinaface_caffe"


@dataclass(frozen=True)
class ReferenceFace:
    image: np.ndarray  # BGR
    bbox: tuple[int, int, int, int]  # x, y, w, h exactly as upstream Detection.get_bbox
    confidence: float


class ReferenceDetector:
    """``src/anti_spoof_predict.py: Detection`` from minivision-ai/Silent-Face-Anti-Spoofing."""

    def __init__(self, sources: Path) -> None:
        d = sources / DETECTOR_DIR
        self.net = cv2.dnn.readNetFromCaffe(str(d / "deploy.prototxt"), str(d / "Widerface-RetinaFace.caffemodel"))

    def detect(self, img: np.ndarray) -> ReferenceFace:
        height, width = img.shape[:2]
        aspect_ratio = width / height
        if img.shape[1] * img.shape[0] >= 192 * 192:
            img_small = cv2.resize(
                img,
                (int(192 * math.sqrt(aspect_ratio)), int(192 / math.sqrt(aspect_ratio))),
                interpolation=cv2.INTER_LINEAR,
            )
        else:
            img_small = img
        blob = cv2.dnn.blobFromImage(img_small, 1, mean=(104, 117, 123))
        self.net.setInput(blob, "data")
        out = self.net.forward("detection_out").squeeze()
        out = out.reshape(-1, 7)
        i = int(np.argmax(out[:, 2]))
        left, top, right, bottom = out[i, 3] * width, out[i, 4] * height, out[i, 5] * width, out[i, 6] * height
        bbox = (int(left), int(top), int(right - left + 1), int(bottom - top + 1))
        return ReferenceFace(img, bbox, float(out[i, 2]))


def reference_crops(sources: Path, images: list[Path] | list[np.ndarray], scale: float, size: int = 80) -> np.ndarray:
    """Upstream crops of the best face of each image (a path or a BGR array, e.g. a video frame),
    as an NCHW float32 batch (BGR, 0..255)."""
    det = ReferenceDetector(sources)
    crops = []
    for p in images:
        img = p if isinstance(p, np.ndarray) else cv2.imread(str(p))
        face = det.detect(img)
        crops.append(crop_face(img, face.bbox, scale, size))
    return np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32)


def video_frames(path: Path, step: int = 1) -> list[np.ndarray]:
    """Every ``step``-th frame of a video or animated GIF (BGR), read with OpenCV."""
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % step == 0:
                frames.append(frame)
            i += 1
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f"{path}: no frames decoded")
    return frames


# --- SuriAI MiniFASNetV2-SE 128 (johnraivenolazo/face-antispoof-onnx @ 2b0a221) -----------------
# A separate, line-by-line re-implementation of upstream ``src/inference/preprocess.py`` (``crop``,
# ``preprocess``) and ``demo.py`` (box truncation, BGR->RGB on the frame before cropping), kept
# apart from liveness.antispoof so the service's generic code is checked against it, not itself.
# (MANIFEST paraphrases the corner as int(cx - side/2); upstream computes int(cx - max_dim*f/2),
# which differs by one pixel for odd max_dim: the code is followed.)

SURIAI_SIZE, SURIAI_EXPANSION = 128, 1.5


def suriai_crop(img: np.ndarray, bbox: tuple, bbox_expansion_factor: float) -> np.ndarray:
    """Upstream ``crop(img, (x1, y1, x2, y2), factor)``."""
    original_height, original_width = img.shape[:2]
    x, y, w, h = bbox
    w = w - x
    h = h - y
    if w <= 0 or h <= 0:
        raise ValueError("Invalid bbox dimensions")
    max_dim = max(w, h)
    center_x = x + w / 2
    center_y = y + h / 2
    x = int(center_x - max_dim * bbox_expansion_factor / 2)
    y = int(center_y - max_dim * bbox_expansion_factor / 2)
    crop_size = int(max_dim * bbox_expansion_factor)
    crop_x1, crop_y1 = max(0, x), max(0, y)
    crop_x2, crop_y2 = min(original_width, x + crop_size), min(original_height, y + crop_size)
    top_pad, left_pad = int(max(0, -y)), int(max(0, -x))
    bottom_pad = int(max(0, (y + crop_size) - original_height))
    right_pad = int(max(0, (x + crop_size) - original_width))
    img = img[crop_y1:crop_y2, crop_x1:crop_x2, :]
    result = cv2.copyMakeBorder(img, top_pad, bottom_pad, left_pad, right_pad, cv2.BORDER_REFLECT_101)
    if result.shape[0] != crop_size or result.shape[1] != crop_size:
        raise ValueError(f"Crop size mismatch: expected {crop_size}x{crop_size}, got {result.shape[:2]}")
    return result


def suriai_preprocess(img: np.ndarray, model_img_size: int) -> np.ndarray:
    """Upstream ``preprocess``: letterbox (Lanczos-4 up / area down, reflect padding), CHW, /255."""
    new_size = model_img_size
    old_size = img.shape[:2]
    ratio = float(new_size) / max(old_size)
    scaled_shape = tuple([int(x * ratio) for x in old_size])
    interpolation = cv2.INTER_LANCZOS4 if ratio > 1.0 else cv2.INTER_AREA
    img = cv2.resize(img, (scaled_shape[1], scaled_shape[0]), interpolation=interpolation)
    delta_w = new_size - scaled_shape[1]
    delta_h = new_size - scaled_shape[0]
    top, bottom = delta_h // 2, delta_h - (delta_h // 2)
    left, right = delta_w // 2, delta_w - (delta_w // 2)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    return img.transpose(2, 0, 1).astype(np.float32) / 255.0


def suriai_input(bgr: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """(3, 128, 128) float32 for one face box (x, y, w, h), as upstream ``demo.py`` builds it:
    the box truncated with ``astype(int)``, the frame converted to RGB, crop, preprocess."""
    x, y, w, h = np.asarray(bbox, np.float64).astype(int)
    frame_rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return suriai_preprocess(suriai_crop(frame_rgb, (x, y, x + w, y + h), SURIAI_EXPANSION), SURIAI_SIZE)


def reference_suriai_crops(sources: Path, images: list[Path] | list[np.ndarray]) -> np.ndarray:
    """SuriAI inputs of the best face of each image, NCHW float32 (RGB, 0..1).  The face box is
    the reference RetinaFace's (the box our pipeline produces by default); upstream's demo feeds
    YuNet boxes, so scores here are for our boxes, not upstream's demo."""
    det = ReferenceDetector(sources)
    out = []
    for p in images:
        img = p if isinstance(p, np.ndarray) else cv2.imread(str(p))
        out.append(suriai_input(img, det.detect(img).bbox))
    return np.stack(out)
