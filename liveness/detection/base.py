"""What every face detector returns, and the shape every detector module has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Face:
    """A face box in original-image pixels, in upstream Silent-Face's (x, y, w, h) convention."""

    x: float
    y: float
    w: float
    h: float
    score: float
    # Five keypoints (eyes, nose, mouth corners) in image pixels when the detector gives them.
    keypoints: np.ndarray | None = None

    @property
    def area(self) -> float:
        return max(0.0, self.w) * max(0.0, self.h)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)

    def scaled(self, k: float) -> "Face":
        """The same face in an image ``k`` times as large (box and keypoints; score unchanged)."""
        if k == 1:
            return self
        kp = None if self.keypoints is None else np.asarray(self.keypoints, np.float32) * np.float32(k)
        return Face(self.x * k, self.y * k, self.w * k, self.h * k, self.score, kp)

    def rectangle(self) -> dict[str, int]:
        """Whole pixels, in the top/left/width/height shape Azure Face answers with."""
        return {"top": round(self.y), "left": round(self.x), "width": round(self.w), "height": round(self.h)}

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "x": round(float(self.x), 1),
            "y": round(float(self.y), 1),
            "width": round(float(self.w), 1),
            "height": round(float(self.h), 1),
            "score": round(float(self.score), 4),
        }
        if self.keypoints is not None:
            d["keypoints"] = [[round(float(a), 1), round(float(b), 1)] for a, b in self.keypoints]
        return d


class DetectorModule(Protocol):
    """preprocess -> backend.infer(model) -> postprocess; pure functions around one model."""

    model: str

    def preprocess(self, bgr: np.ndarray) -> tuple[np.ndarray, Any]:
        """Image -> (1, 3, H, W) float32 input and whatever postprocess needs to map boxes back."""
        ...

    def postprocess(self, outputs: list[np.ndarray], meta: Any) -> list[Face]:
        """Outputs for ONE image -> faces above the confidence threshold, best first."""
        ...


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS; returns kept indices in descending score order."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes_xyxy.T
    areas = np.maximum(0, x2 - x1) * np.maximum(0, y2 - y1)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return keep
