"""Is this still the same face as on the previous frame?  Two cheap, documented cues.

* Box continuity: the centre of the face box may move at most ``max_center_jump`` times the
  previous box's larger side between two consecutive face frames, and the smaller/larger box
  area ratio must stay above ``min_area_ratio``.  A head turn moves the box a little per frame;
  swapping the person (or a photo) in front of the camera moves or resizes it at once.
* Appearance: an 8-bins-per-channel BGR colour histogram (24 values, summing to 1) of an 80x80
  face crop (``identity_crop``: Silent-Face's crop at scale 2.7, face plus context; the
  MiniFASNetV2 input, but made here whatever anti-spoof models are configured), compared by
  histogram intersection (1 = identical colour distribution).  Skin, hair, clothes and
  background change together when the face changes; lighting drifts slowly between frames.

Both are compared frame to frame (not to the first frame), so slow drifts pass and jumps fail.
They are anti-substitution heuristics, not face recognition.  The face changed when (``changed``):

* one hard cue: centre jump > ``max_center_jump`` (0.5), area ratio < ``min_area_ratio`` (0.5)
  or appearance < ``min_appearance`` (0.6); or
* two soft cues together: appearance < 0.8 AND (centre jump > 0.15 OR area ratio < 0.85).

Calibration (dev media, frame to frame): the real video at 10 fps with head turns and blinks
stays at jump <= 0.18, area ratio >= 0.89, appearance >= 0.78 (0.78 only on a still box); the
silentface_demo.gif cuts real -> replay (jump 0.22, appearance 0.70) and replay -> print (area
ratio 0.20, appearance 0.71) are both caught.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from liveness.antispoof.crop import crop_face
from liveness.detection.base import Face

BINS = 8
CROP_SCALE, CROP_SIZE = 2.7, 80  # the calibration below was measured on these crops


def identity_crop(bgr: np.ndarray, face: Face) -> np.ndarray:
    """CROP_SIZE x CROP_SIZE x 3 uint8 BGR crop of the face with context."""
    return crop_face(bgr, face.bbox, CROP_SCALE, CROP_SIZE)


def colour_hist(crop: np.ndarray) -> tuple[float, ...]:
    """``crop``: (1, 3, H, W) or (3, H, W) float 0..255 BGR (a MiniFASNet input) or (H, W, 3) uint8."""
    a = np.asarray(crop)
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    q = np.clip(a.reshape(-1, 3), 0, 255).astype(np.int64) * BINS // 256
    h = np.concatenate([np.bincount(q[:, c], minlength=BINS)[:BINS] for c in range(3)]).astype(np.float64)
    h /= max(h.sum(), 1.0)
    return tuple(round(float(v), 5) for v in h)


def intersection(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.minimum(np.asarray(a, float), np.asarray(b, float)).sum())


def continuity(
    prev_box: Sequence[float], box: Sequence[float], prev_hist: Sequence[float] | None, hist: Sequence[float] | None
) -> dict[str, float]:
    px, py, pw, ph = prev_box
    x, y, w, h = box
    jump = float(np.hypot((x + w / 2) - (px + pw / 2), (y + h / 2) - (py + ph / 2)) / max(pw, ph, 1.0))
    a0, a1 = max(pw * ph, 1.0), max(w * h, 1.0)
    out = {"center_jump": round(jump, 4), "area_ratio": round(min(a0, a1) / max(a0, a1), 4)}
    if prev_hist is not None and hist is not None:
        out["appearance"] = round(intersection(prev_hist, hist), 4)
    return out


SOFT_APPEARANCE = 0.8
SOFT_JUMP = 0.15
SOFT_AREA = 0.85


def changed(cue: dict[str, float], max_center_jump: float, min_area_ratio: float, min_appearance: float) -> bool:
    jump, area, app = cue["center_jump"], cue["area_ratio"], cue.get("appearance", 1.0)
    if jump > max_center_jump or area < min_area_ratio or app < min_appearance:
        return True
    return app < SOFT_APPEARANCE and (jump > SOFT_JUMP or area < SOFT_AREA)
