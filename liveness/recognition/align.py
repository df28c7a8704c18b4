"""5-point face alignment onto the ArcFace 112x112 template (what MobileFaceNet was trained on).

The service's one face alignment: verification (the embedder's input, quality for recognition)
and the video endpoint's ``normalized`` best face use ``align_face``.  The template is the
embedder's: its config.pbtxt ``template`` parameter (``MobileFaceNet.from_config``);
``ARCFACE_TEMPLATE`` is the documented default, for a repository without one.

Upstream (foamliu/MobileFaceNet ``utils.align_face``) estimates a similarity transform with
scikit-image's ``SimilarityTransform.estimate`` (Umeyama 1991, no reflection) from the detector's
five landmarks to the template, then ``cv2.warpAffine(img, M, (112, 112))``: bilinear, black
border.  ``similarity_transform`` is that estimate, re-implemented in numpy (scikit-image is not
a dependency); it is the exact least-squares similarity, with no outlier rejection (unlike
``cv2.estimateAffinePartial2D``, which is RANSAC/LMEDS).
"""

from __future__ import annotations

import cv2
import numpy as np

ALIGNED_SIZE = 112

# The ArcFace template in 112x112 pixels (upstream: the 96x112 REFERENCE_FACIAL_POINTS + 8 px in x);
# the default of the embedder's ``template`` parameter.
# Order: image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth
# corner — YuNet's keypoint order as is.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)


def similarity_transform(src5: np.ndarray, dst5: np.ndarray) -> np.ndarray:
    """The 2x3 matrix M of the similarity (scale, rotation, translation; never a reflection) that
    maps ``src`` points onto ``dst`` with the least squared error:  dst ~ M @ [x, y, 1].

    Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", PAMI 1991, eq. 40-43, as ``skimage.transform._geometric._umeyama`` with
    ``estimate_scale=True``.
    """
    src = np.asarray(src5, np.float64).reshape(-1, 2)
    dst = np.asarray(dst5, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two matching point sets of >= 2 points, got {src.shape} and {dst.shape}")
    n, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    a = dst_c.T @ src_c / n  # eq. 38
    d = np.ones(dim)
    if np.linalg.det(a) < 0:  # eq. 39: a reflection would fit better; force a rotation instead
        d[dim - 1] = -1
    u, s, vt = np.linalg.svd(a)
    rank = np.linalg.matrix_rank(a)
    if rank == 0:
        raise ValueError("degenerate keypoints (all at one point)")
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            r = u @ vt
        else:
            s_ = d[dim - 1]
            d[dim - 1] = -1
            r = u @ np.diag(d) @ vt
            d[dim - 1] = s_
    else:
        r = u @ np.diag(d) @ vt  # eq. 40
    var = src_c.var(axis=0).sum()
    scale = (s @ d) / var if var > 0 else 1.0  # eq. 42
    t = dst_mean - scale * (r @ src_mean)  # eq. 41
    return np.hstack([scale * r, t[:, None]])


def align_face(
    bgr: np.ndarray, keypoints5: np.ndarray, size: int = ALIGNED_SIZE, template: np.ndarray | None = None
) -> np.ndarray:
    """The face warped onto the template: ``size`` x ``size`` BGR uint8 (bilinear, black outside
    the image).  ``template``: (5, 2) points in ``size`` x ``size`` pixels; default the ArcFace
    template scaled to ``size``.  Raises ValueError on degenerate keypoints."""
    dst = ARCFACE_TEMPLATE * (size / ALIGNED_SIZE) if template is None else np.asarray(template, np.float64).reshape(5, 2)
    m = similarity_transform(np.asarray(keypoints5, np.float64).reshape(5, 2), dst)
    out = cv2.warpAffine(
        bgr, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )
    return out if out.dtype == np.uint8 else np.clip(out, 0, 255).astype(np.uint8)


def transform_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return p @ m[:, :2].T + m[:, 2]
