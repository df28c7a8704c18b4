"""Parity check: RetinaFace Caffe -> ONNX (ORT + numpy post-processing) vs OpenCV's Caffe import.

Usage: python converters/check_retinaface_parity.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from converters.caffe_to_onnx import convert_caffe, parity_check, preprocess_upstream  # noqa: E402
from liveness.detection.retinaface_post import (  # noqa: E402
    best_box_xywh, detect_from_outputs, retinaface_priors)

MODEL_DIR = Path("/work/shared/models/detection/retinaface_caffe")
PROTOTXT = MODEL_DIR / "deploy.prototxt"
CAFFEMODEL = MODEL_DIR / "Widerface-RetinaFace.caffemodel"
IMAGE_GLOBS = [Path("/work/shared/media/dev/images"), Path("/work/shared/media/dev/verification")]
TOL = 1e-4


def _upstream_box(det: np.ndarray, w: int, h: int):
    if det.shape[0] == 0:
        return None, None
    i = int(np.argmax(det[:, 2]))
    return best_box_xywh(det, w, h), float(det[i, 2])


def main() -> int:
    paths = sorted(p for d in IMAGE_GLOBS for p in d.glob("*.jpg"))
    images = [cv2.imread(str(p)) for p in paths]
    model = convert_caffe(PROTOTXT, CAFFEMODEL)
    print(f"converted: {len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers")

    res = parity_check(model, PROTOTXT, CAFFEMODEL, images)
    print("max abs diffs over", len(images), "images:")
    for k, v in res.items():
        print(f"  {k:28s} {v:.3g}")

    # per-image upstream box from both paths
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    net = cv2.dnn.readNetFromCaffe(str(PROTOTXT), str(CAFFEMODEL))
    print("\nmax-confidence box [x, y, w, h] (upstream get_bbox format): ORT+numpy | OpenCV")
    for p, img in zip(paths, images):
        H, W = img.shape[:2]
        blob = preprocess_upstream(img)
        loc, conf = sess.run(["loc", "conf"], {"data": blob})
        det = detect_from_outputs(loc[0], conf[0], retinaface_priors(*blob.shape[2:]))
        net.setInput(blob)
        cvd = net.forward("detection_out").reshape(-1, 7)
        a, sa = _upstream_box(det, W, H)
        b, sb = _upstream_box(cvd, W, H)
        same = "OK" if a == b else "DIFF"
        print(f"  {p.name:26s} {W}x{H} blob {blob.shape[3]}x{blob.shape[2]}  {a} {sa:.5f} | {b} {sb:.5f}  {same}")

    # timing on one 192x256 (HxW) input
    img = cv2.resize(images[0], (256, 192))
    blob = cv2.dnn.blobFromImage(img, 1, mean=(104, 117, 123))

    def bench(fn, n=50):
        fn()
        fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return 1000 * float(np.median(ts))

    def ort_full():
        loc, conf = sess.run(["loc", "conf"], {"data": blob})
        return detect_from_outputs(loc[0], conf[0], retinaface_priors(192, 256))

    def cv_full():
        net.setInput(blob)
        return net.forward("detection_out")

    t_ort_raw = bench(lambda: sess.run(["loc", "conf"], {"data": blob}))
    t_ort = bench(ort_full)
    t_cv = bench(cv_full)
    loc, conf = sess.run(["loc", "conf"], {"data": blob})
    t_post = bench(lambda: detect_from_outputs(loc[0], conf[0], retinaface_priors(192, 256)), n=200)
    print(f"\ntiming 1x3x192x256, median of 50 (threads: ORT 2, OpenCV {cv2.getNumThreads()}):")
    print(f"  ORT forward {t_ort_raw:.2f} ms, ORT+numpy post {t_ort:.2f} ms (post alone {t_post:.3f} ms); "
          f"OpenCV forward to detection_out {t_cv:.2f} ms")

    bad = {k: v for k, v in res.items() if v > TOL}
    if bad:
        print("FAIL:", bad)
        return 1
    print("PASS (all <= %.0e)" % TOL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
