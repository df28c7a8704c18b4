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
