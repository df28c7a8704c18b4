"""YuNet (libfacedetection): boxes plus five keypoints.  Decode identical to cv2.FaceDetectorYN."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from liveness.detection.base import Face, nms

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class YuNetMeta:
    scale: float  # original pixels per network pixel
    pad_h: int
    pad_w: int


class YuNet:
    model = "yunet"

    def __init__(self, confidence: float = 0.6, nms_threshold: float = 0.3, max_side: int = 640) -> None:
        self.confidence = confidence
        self.nms_threshold = nms_threshold
        self.max_side = max_side

    def preprocess(self, bgr: np.ndarray) -> tuple[np.ndarray, YuNetMeta]:
        h, w = bgr.shape[:2]
        # The model handles faces of ~10-300 px: a full-resolution selfie hides its face.
        scale = max(h, w) / self.max_side if max(h, w) > self.max_side else 1.0
        if scale != 1.0:
            bgr = cv2.resize(bgr, (round(w / scale), round(h / scale)), interpolation=cv2.INTER_AREA)
        rh, rw = bgr.shape[:2]
        ph, pw = -(-rh // 32) * 32, -(-rw // 32) * 32
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :rh, :rw] = bgr.transpose(2, 0, 1)
        return x, YuNetMeta(scale, ph, pw)

    def postprocess(self, outputs: list[np.ndarray], meta: YuNetMeta) -> list[Face]:
        # outputs in config order: cls_8,16,32, obj_8,16,32, bbox_8,16,32, kps_8,16,32 (batch row 0)
        cls, obj, bbox, kps = (outputs[i : i + 3] for i in range(0, 12, 3))
        all_boxes, all_scores, all_kps = [], [], []
        for k, s in enumerate(STRIDES):
            cols = meta.pad_w // s
            score = np.sqrt(np.clip(cls[k][0, :, 0], 0, 1) * np.clip(obj[k][0, :, 0], 0, 1))
            idx = np.nonzero(score >= self.confidence)[0]
            if idx.size == 0:
                continue
            r, c = np.divmod(idx, cols)
            b = bbox[k][0, idx]
            cx, cy = (c + b[:, 0]) * s, (r + b[:, 1]) * s
            w, h = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
            all_boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], 1))
            all_scores.append(score[idx])
            p = kps[k][0, idx].reshape(-1, 5, 2)
            all_kps.append(np.stack([(p[:, :, 0] + c[:, None]) * s, (p[:, :, 1] + r[:, None]) * s], 2))
        if not all_boxes:
            return []
        boxes, scores, points = np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_kps)
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
        keep = nms(xyxy, scores, self.nms_threshold)
        f = meta.scale
        return [
            Face(
                float(boxes[i, 0] * f), float(boxes[i, 1] * f), float(boxes[i, 2] * f), float(boxes[i, 3] * f),
                float(scores[i]), points[i] * f,
            )
            for i in keep
        ]
