"""Square, zero-padded crops for the landmark models, and the map back to image pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from liveness.inference.repository import ModelConfig


@dataclass(frozen=True)
class SquareCrop:
    """A square of ``side`` image pixels at (x0, y0), resized to ``size`` pixels."""

    x0: int
    y0: int
    side: int
    size: int
    mirrored: bool = False

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        """(K, 2 or 3) points in crop pixels -> image pixels (z scaled like x)."""
        out = np.array(pts, dtype=np.float64, copy=True)
        if self.mirrored:
            out[:, 0] = self.size - out[:, 0]
        k = self.side / self.size
        out[:, :2] *= k
        out[:, 0] += self.x0
        out[:, 1] += self.y0
        if out.shape[1] > 2:
            out[:, 2] *= k
        return out


def square_crop(bgr: np.ndarray, cx: float, cy: float, side: float, size: int, mirror: bool = False) -> tuple[np.ndarray, SquareCrop]:
    """Crop a ``side``-pixel square centred on (cx, cy), zeros outside the image, resized to
    ``size`` (INTER_AREA when shrinking), optionally mirrored left-right.  Returns (crop, map)."""
    s = max(1, int(round(side)))
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    h, w = bgr.shape[:2]
    out = np.zeros((s, s, 3), bgr.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = bgr[sy0:sy1, sx0:sx1]
    crop = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA if s > size else cv2.INTER_LINEAR)
    if mirror:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop), SquareCrop(x0, y0, s, size, mirror)


def to_input(crops: list[np.ndarray], divisor: float = 127.5, mean: float = 1.0, color: str = "RGB") -> np.ndarray:
    """BGR uint8 crops -> (N, 3, S, S) float32 in ``color`` order, ``x / divisor - mean``
    (default MediaPipe's RGB in [-1, 1]: x / 127.5 - 1)."""
    x = np.stack([c[:, :, ::-1] if color == "RGB" else c for c in crops]).astype(np.float32)
    return np.ascontiguousarray((x / divisor - mean).transpose(0, 3, 1, 2))


@dataclass(frozen=True)
class LandmarkInput:
    """A landmark model's name and how its input is cut and scaled: what its config.pbtxt says
    (``crop_scale``, ``input_size``, ``color``, ``input_divisor``, ``input_mean``), else the
    module's documented defaults."""

    model: str
    crop_scale: float
    size: int
    color: str
    divisor: float
    mean: float

    def read(self, cfg: "ModelConfig") -> "LandmarkInput":
        size = cfg.integer("input_size", self.size, positive=True)
        cfg.check_square_input(size)
        return LandmarkInput(
            cfg.name,
            cfg.number("crop_scale", self.crop_scale, positive=True),
            size,
            cfg.text("color", self.color, ("RGB", "BGR")),
            cfg.number("input_divisor", self.divisor, positive=True),
            cfg.number("input_mean", self.mean),
        )


class LandmarkModule:
    """What the face mesh and iris modules share: their ``input`` (a dataclass field whose default
    holds the module's defaults) read from a model config."""

    input: LandmarkInput

    @property
    def model(self) -> str:
        return self.input.model

    @classmethod
    def from_config(cls, cfg: "ModelConfig"):  # -> an instance of the subclass
        return cls(cls.input.read(cfg))  # type: ignore[call-arg]
