"""One generic anti-spoof classifier: any model described by an ``AntiSpoofSpec`` (its
config.pbtxt parameters, see ``liveness.antispoof.spec``).  MiniFASNet V2 / V1SE and SuriAI's
MiniFASNetV2-SE are configurations of this class, not code."""

from __future__ import annotations

import numpy as np

from liveness.antispoof.crop import crop_face, square_reflect_face
from liveness.antispoof.spec import AntiSpoofSpec
from liveness.detection.base import Face
from liveness.inference.repository import ModelConfig


class AntiSpoofModel:
    def __init__(self, spec: AntiSpoofSpec) -> None:
        self.spec = spec
        self.model = spec.model
        # Identity steps are skipped (they would be exact no-ops anyway: x / 1, x - 0, x / 1).
        self._divisor = np.float32(spec.input_divisor) if spec.input_divisor != 1.0 else None
        self._mean = np.asarray(spec.input_mean, np.float32)[:, None, None] if any(spec.input_mean) else None
        self._std = np.asarray(spec.input_std, np.float32)[:, None, None] if spec.input_std != (1.0, 1.0, 1.0) else None

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "AntiSpoofModel":
        return cls(AntiSpoofSpec.from_config(cfg))

    def crop(self, bgr: np.ndarray, face: Face) -> np.ndarray:
        """S x S x 3 uint8 crop in the model's colour order."""
        s = self.spec
        if s.crop == "silentface":
            img = crop_face(bgr, face.bbox, s.crop_scale, s.input_size)
        else:
            img = square_reflect_face(bgr, face.bbox, s.crop_scale, s.input_size)
        # Cropping, padding and per-channel resizing commute with the channel swap, so converting
        # the crop gives the same pixels as converting the whole frame first (as upstreams do).
        return np.ascontiguousarray(img[:, :, ::-1]) if s.color == "RGB" else img

    def preprocess(self, bgr: np.ndarray, face: Face) -> np.ndarray:
        """(1, 3, S, S) float32: ``(x / input_divisor - input_mean) / input_std``."""
        x = self.crop(bgr, face).transpose(2, 0, 1)[None].astype(np.float32)
        if self._divisor is not None:
            x /= self._divisor
        if self._mean is not None:
            x -= self._mean
        if self._std is not None:
            x /= self._std
        return x

    def postprocess(self, logits: np.ndarray) -> np.ndarray:
        """Logits (N, K) -> p(live) per row, (N,) float64."""
        z = np.asarray(logits, np.float64)
        live = self.spec.live_class
        if self.spec.activation == "sigmoid_diff":
            d = z[:, live] - z[:, 1 - live]
            e = np.exp(-np.abs(d))  # never overflows
            return np.where(d >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e[:, live] / e.sum(axis=1)
