"""RetinaFace (the Silent-Face reference detector), converted from Caffe by the converters.

Pre- and post-processing reproduce upstream ``Detection.get_bbox``: resize to ~192x192 area,
subtract the Caffe mean, decode SSD priors, NMS; boxes are upstream's integer (x, y, w, h).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from liveness.detection.base import Face
from liveness.detection.retinaface_post import detect_from_outputs, retinaface_priors

MEAN = np.array([104.0, 117.0, 123.0], np.float32)
REFERENCE_SIDE = 192  # upstream: images of at least 192x192 area are resized to about that area


@dataclass(frozen=True)
class RetinaMeta:
    width: int  # original image
    height: int
    net_h: int
    net_w: int


class RetinaFace:
    def __init__(self, confidence: float = 0.6, area: int | None = None, model: str = "retinaface") -> None:
        """``area=None`` is upstream's rule (resize only images of at least 192x192 area);
        ``area=A`` resizes every image to about AxA area (the acquisition fallbacks)."""
        self.confidence = confidence
        self.area = area
        self.model = model

    def preprocess(self, bgr: np.ndarray) -> tuple[np.ndarray, RetinaMeta]:
        height, width = bgr.shape[:2]
        side = self.area or REFERENCE_SIDE
        if self.area is not None or width * height >= side * side:
            ar = width / height
            size = (max(16, int(side * math.sqrt(ar))), max(16, int(side / math.sqrt(ar))))
            down = size[0] * size[1] < width * height and self.area is not None
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
        nh, nw = bgr.shape[:2]
        x = (bgr.astype(np.float32) - MEAN).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(x), RetinaMeta(width, height, nh, nw)

    def postprocess(self, outputs: list[np.ndarray], meta: RetinaMeta) -> list[Face]:
        loc, conf = outputs[0][0], outputs[1][0]
        rows = detect_from_outputs(loc, conf, retinaface_priors(meta.net_h, meta.net_w))
        faces = []
        for row in rows:
            if row[2] < self.confidence:
                break  # rows are sorted by confidence
            left, top = row[3] * meta.width, row[4] * meta.height
            right, bottom = row[5] * meta.width, row[6] * meta.height
            faces.append(Face(int(left), int(top), int(right - left + 1), int(bottom - top + 1), float(row[2])))
        return faces
