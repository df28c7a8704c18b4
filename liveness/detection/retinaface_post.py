"""RetinaFace (Caffe, Widerface mobilenet) post-processing in pure numpy.

Reproduces what the dropped Caffe layers compute, as OpenCV's dnn module implements them:
  * ``PriorBox`` x3 (min_sizes 16,32 @ step 8; 64,128 @ 16; 256,512 @ 32; aspect ratio 1 only,
    no max_size, clip false, offset 0.5, normalised by the input image size);
  * ``DetectionOutput`` (2 classes, background 0, share_location, CENTER_SIZE decoding with
    variances 0.1/0.1/0.2/0.2 taken from the priors, confidence > 0.1, per-class greedy NMS
    with IoU > 0.3 suppressed, top_k 400 before NMS, eta 1, keep_top_k 200 after NMS).

``loc`` / ``conf`` are the ONNX outputs for one image ([P,4] and [P,2]).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# (min_sizes, step) per detection level, in the prototxt's order
PRIOR_LEVELS: tuple[tuple[tuple[float, ...], float], ...] = (
    ((16.0, 32.0), 8.0),
    ((64.0, 128.0), 16.0),
    ((256.0, 512.0), 32.0),
)
PRIOR_OFFSET = 0.5
# number of stride-2 (k=3, pad=1) convolutions before each level's feature map
_LEVEL_DOWNSAMPLES = (3, 4, 5)


def _down(x: int, n: int) -> int:
    """Apply n Caffe convolutions with kernel 3, pad 1, stride 2: out = (in + 2 - 3) // 2 + 1."""
    for _ in range(n):
        x = (x - 1) // 2 + 1
    return x


def feature_map_sizes(height: int, width: int) -> list[tuple[int, int]]:
    return [(_down(height, n), _down(width, n)) for n in _LEVEL_DOWNSAMPLES]


@lru_cache(maxsize=64)
def _priors_cached(height: int, width: int) -> np.ndarray:
    img_w = np.float32(width)
    img_h = np.float32(height)
    off = np.float32(PRIOR_OFFSET)
    half = np.float32(0.5)
    chunks = []
    for (fh, fw), (min_sizes, step) in zip(feature_map_sizes(height, width), PRIOR_LEVELS):
        step32 = np.float32(step)
        cx = (np.arange(fw, dtype=np.float32) + off) * step32  # [fw]
        cy = (np.arange(fh, dtype=np.float32) + off) * step32  # [fh]
        cxg = np.broadcast_to(cx[None, :, None], (fh, fw, len(min_sizes)))
        cyg = np.broadcast_to(cy[:, None, None], (fh, fw, len(min_sizes)))
        sz = np.asarray(min_sizes, dtype=np.float32)[None, None, :] * half
        box = np.stack([(cxg - sz) / img_w, (cyg - sz) / img_h,
                        (cxg + sz) / img_w, (cyg + sz) / img_h], axis=-1)  # [fh, fw, k, 4]
        chunks.append(box.reshape(-1, 4))
    out = np.ascontiguousarray(np.concatenate(chunks, axis=0), dtype=np.float32)
    out.flags.writeable = False
    return out


def retinaface_priors(height: int, width: int) -> np.ndarray:
    """Normalised prior boxes [P,4] (xmin, ymin, xmax, ymax), float32, in Caffe PriorBox order
    (level, row, column, min_size). The returned array is cached and read-only."""
    return _priors_cached(int(height), int(width))


def decode_center_size(loc: np.ndarray, priors: np.ndarray,
                       variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)) -> np.ndarray:
    """Caffe DecodeBBox, CENTER_SIZE, variance not encoded in target, normalised boxes."""
    loc = np.asarray(loc, dtype=np.float32)
    v = np.asarray(variances, dtype=np.float32)
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    pcx = (priors[:, 0] + priors[:, 2]) * np.float32(0.5)
    pcy = (priors[:, 1] + priors[:, 3]) * np.float32(0.5)
    cx = v[0] * loc[:, 0] * pw + pcx
    cy = v[1] * loc[:, 1] * ph + pcy
    w = np.exp(v[2] * loc[:, 2]) * pw
    h = np.exp(v[3] * loc[:, 3]) * ph
    hw = w * np.float32(0.5)
    hh = h * np.float32(0.5)
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)


def _nms_fast(boxes: np.ndarray, scores: np.ndarray, score_threshold: float,
              nms_threshold: float, top_k: int) -> np.ndarray:
    """Caffe ApplyNMSFast (eta = 1): returns kept indices in descending-score order."""
    cand = np.flatnonzero(scores > np.float32(score_threshold))
    if cand.size == 0:
        return cand
    # std::stable_sort by score descending -> ties keep ascending index order
    order = cand[np.argsort(-scores[cand], kind="stable")]
    if top_k > -1 and order.size > top_k:
        order = order[:top_k]
    b = boxes[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    w = x2 - x1
    h = y2 - y1
    area = np.where((w < 0) | (h < 0), np.float32(0), w * h)
    ix1 = np.maximum(x1[:, None], x1[None, :])
    iy1 = np.maximum(y1[:, None], y1[None, :])
    ix2 = np.minimum(x2[:, None], x2[None, :])
    iy2 = np.minimum(y2[:, None], y2[None, :])
    iw = ix2 - ix1
    ih = iy2 - iy1
    inter = np.where((iw < 0) | (ih < 0), np.float32(0), iw * ih)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(inter > 0, inter / (area[:, None] + area[None, :] - inter), np.float32(0))
    # greedy: a candidate survives iff its IoU with every earlier *kept* box is <= threshold.
    alive = np.ones(order.size, dtype=bool)
    keep = []
    thr = np.float32(nms_threshold)
    for i in range(order.size):
        if not alive[i]:
            continue
        keep.append(i)
        alive[i + 1:] &= ~(iou[i, i + 1:] > thr)
    return order[np.asarray(keep, dtype=np.int64)]


def detect_from_outputs(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray, *,
                        variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2),
                        conf_threshold: float = 0.1, nms_threshold: float = 0.3,
                        top_k: int = 400, keep_top_k: int = 200,
                        background_label: int = 0, img_id: int = 0) -> np.ndarray:
    """DetectionOutput rows [K,7] = (img_id, label, conf, x1, y1, x2, y2), normalised, not clipped,
    sorted by confidence descending. K may be 0 (OpenCV then emits a single all-zero row instead)."""
    loc = np.asarray(loc, dtype=np.float32).reshape(-1, 4)
    conf = np.asarray(conf, dtype=np.float32)
    conf = conf.reshape(loc.shape[0], -1)
    if priors.shape[0] != loc.shape[0]:
        raise ValueError(f"{loc.shape[0]} predictions but {priors.shape[0]} priors")
    boxes = decode_center_size(loc, priors, variances)
    rows = []
    for c in range(conf.shape[1]):
        if c == background_label:
            continue
        sc = conf[:, c]
        idx = _nms_fast(boxes, sc, conf_threshold, nms_threshold, top_k)
        if idx.size:
            r = np.empty((idx.size, 7), np.float32)
            r[:, 0] = img_id
            r[:, 1] = c
            r[:, 2] = sc[idx]
            r[:, 3:] = boxes[idx]
            rows.append(r)
    if not rows:
        return np.zeros((0, 7), np.float32)
    out = np.concatenate(rows, axis=0)
    order = np.argsort(-out[:, 2], kind="stable")
    if keep_top_k > -1 and order.size > keep_top_k:
        order = order[:keep_top_k]
    return out[order]


def best_box_xywh(det: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Upstream Silent-Face ``get_bbox``: max-confidence row -> ints (x, y, w, h) in pixels."""
    if det.shape[0] == 0:
        return None
    r = det[int(np.argmax(det[:, 2]))]
    x1, y1, x2, y2 = r[3] * width, r[4] * height, r[5] * width, r[6] * height
    return int(x1), int(y1), int(x2 - x1 + 1), int(y2 - y1 + 1)
