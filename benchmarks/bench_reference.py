"""The peer: the upstream Silent-Face-Anti-Spoofing pipeline, one image at a time, in-process.

    python benchmarks/bench_reference.py [--seconds 10] [--json]

What upstream's demo (``test.py`` of minivision-ai/Silent-Face-Anti-Spoofing) does per image,
step by step, on the same dev images (T1 live, F1/F2 spoof) and the same cores as the service:

1. read the image (``cv2.imread``; here ``cv2.imdecode`` of the bytes already in memory, so disk
   I/O is left out on both sides) and ``check_image`` (the demo wants 3:4 images);
2. ``Detection.get_bbox``: the RetinaFace Caffe model through OpenCV's own Caffe importer
   (``converters/reference.py``, a line-for-line port: resize to ~192x192 area, blob, forward,
   best row);
3. for each of the two models: ``CropImage.crop`` (Silent-Face's crop rule, 80x80), upstream's
   patched ``ToTensor`` (HWC->CHW float, no scaling), batch of 1, forward, softmax; the two softmax
   vectors are summed, ``label = argmax``, score = sum[label] / 2.

The MiniFASNets run as the upstream ONNX exports (``../shared/models/antispoof/minifasnet/
MiniFASNetV2.onnx`` and ``MiniFASNetV1SE.onnx``: yakhyo's exports of the same ``.pth`` weights,
max |logit diff| vs PyTorch 2.4e-6, MANIFEST.md) with onnxruntime at batch 1, sequentially, default
session options (intra-op threads = cores), not with PyTorch: PyPI's Linux ``torch`` wheel pulls
the CUDA runtime wheels (gigabytes), too heavy for a bench-only dependency.  onnxruntime at batch 1
is at least as fast as eager PyTorch for these 0.08-GFLOP nets, so the peer is not handicapped.

Two variants:

* ``warm`` (the peer used for the ratios): detector and both models loaded once, then images one
  at a time for ``--seconds``;
* ``demo-literal``: what ``test.py`` literally does, where every call builds ``AntiSpoofPredict``
  (reads the Caffe detector) and ``predict`` reloads the model weights (here: a new onnxruntime
  session) for every image.  For information only.

Prints a summary, or one JSON document with ``--json`` (used by ``bench_report.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from converters.reference import ReferenceDetector  # noqa: E402  (OpenCV Caffe importer)
from liveness.antispoof.crop import crop_face  # noqa: E402  (CropImage._get_new_box, exactly)

SOURCES = REPO.parent / "shared" / "models"
MEDIA = REPO.parent / "shared" / "media" / "dev" / "images"
IMAGES = (("T1", True), ("F1", False), ("F2", False))
# upstream resources/anti_spoof_models/ file names -> the ONNX export of the same weights
MODELS = (
    ("2.7_80x80_MiniFASNetV2.pth", SOURCES / "antispoof" / "minifasnet" / "MiniFASNetV2.onnx"),
    ("4_0_0_80x80_MiniFASNetV1SE.pth", SOURCES / "antispoof" / "minifasnet" / "MiniFASNetV1SE.onnx"),
)


def parse_model_name(name: str) -> tuple[int, int, str, float | None]:
    """upstream ``src/utility.py: parse_model_name``."""
    info = name.split("_")[0:-1]
    h_input, w_input = info[-1].split("x")
    model_type = name.split(".pth")[0].split("_")[-1]
    scale = None if info[0] == "org" else float(info[0])
    return int(h_input), int(w_input), model_type, scale


def check_image(image: np.ndarray) -> bool:
    """upstream ``test.py: check_image`` (the demo refuses anything but 3:4)."""
    height, width = image.shape[:2]
    return width / height == 3 / 4


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """``AntiSpoofPredict`` with the ONNX export in place of the torch module."""

    def __init__(self, onnx_path: Path) -> None:
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(self, img: np.ndarray) -> np.ndarray:
        x = img.transpose((2, 0, 1)).astype(np.float32)[None]  # patched ToTensor + unsqueeze(0)
        return softmax(self.session.run(None, {self.input: x})[0])


class Reference:
    def __init__(self) -> None:
        self.detector = ReferenceDetector(SOURCES)
        self.models = [(parse_model_name(name), Predictor(path)) for name, path in MODELS]

    def run(self, raw: bytes) -> tuple[bool, float, dict[str, float]]:
        """One image through the demo's steps: (is_live, score, step seconds)."""
        t0 = time.perf_counter()
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        if not check_image(image):
            raise ValueError("the upstream demo refuses images that are not 3:4")
        t1 = time.perf_counter()
        bbox = self.detector.detect(image).bbox
        t2 = time.perf_counter()
        prediction = np.zeros((1, 3))
        for (h_input, w_input, _type, scale), model in self.models:
            img = crop_face(image, bbox, scale, w_input) if scale is not None else cv2.resize(image, (w_input, h_input))
            prediction += model.predict(img)
        label = int(np.argmax(prediction))
        t3 = time.perf_counter()
        return label == 1, float(prediction[0][label] / 2), {"decode": t1 - t0, "detect": t2 - t1, "classify": t3 - t2}


def load_images() -> list[tuple[str, bool, bytes]]:
    return [(n, live, (MEDIA / f"silentface_image_{n}.jpg").read_bytes()) for n, live in IMAGES]


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def measure_warm(images: list[tuple[str, bool, bytes]], seconds: float) -> dict:
    ref = Reference()
    for i in range(6):  # warm-up
        ref.run(images[i % len(images)][2])
    lat: list[float] = []
    steps: dict[str, list[float]] = {"decode": [], "detect": [], "classify": []}
    wrong, i = 0, 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    stop = t0 + seconds
    while time.perf_counter() < stop or len(lat) < 10:
        name, live, raw = images[i % len(images)]
        s = time.perf_counter()
        is_live, _score, st = ref.run(raw)
        lat.append(time.perf_counter() - s)
        for k, v in st.items():
            steps[k].append(v)
        wrong += is_live != live
        i += 1
    elapsed = time.perf_counter() - t0
    return {
        "images": len(lat), "seconds": elapsed, "wrong": wrong,
        "images_per_s": len(lat) / elapsed,
        "p50_ms": pct(lat, 50) * 1000, "p95_ms": pct(lat, 95) * 1000, "p99_ms": pct(lat, 99) * 1000,
        "mean_ms": statistics.mean(lat) * 1000,
        "steps_ms": {k: statistics.median(v) * 1000 for k, v in steps.items()},
        "cpu_pct": 100 * (cpu_seconds() - cpu0) / elapsed,
        "scores": {name: round(ref.run(raw)[1], 4) for name, _live, raw in images},
    }


def measure_literal(images: list[tuple[str, bool, bytes]], n: int) -> dict:
    lat = []
    wrong = 0
    t0 = time.perf_counter()
    for i in range(n):
        name, live, raw = images[i % len(images)]
        s = time.perf_counter()
        ref = Reference()  # test.py: AntiSpoofPredict(device_id) per call; predict() reloads weights
        is_live, _score, _st = ref.run(raw)
        lat.append(time.perf_counter() - s)
        wrong += is_live != live
    elapsed = time.perf_counter() - t0
    return {"images": n, "seconds": elapsed, "wrong": wrong, "images_per_s": n / elapsed,
            "p50_ms": pct(lat, 50) * 1000, "p95_ms": pct(lat, 95) * 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measurement time of the warm variant")
    ap.add_argument("--literal", type=int, default=15, help="images for the demo-literal variant (0: skip)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    a = ap.parse_args()
    images = load_images()
    out = {
        "cv2": cv2.__version__, "onnxruntime": ort.__version__,
        "cv2_threads": cv2.getNumThreads(),
        "ort_intra_op_threads": "default (0 = one per core)",
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "warm": measure_warm(images, a.seconds),
    }
    if a.literal > 0:
        out["literal"] = measure_literal(images, a.literal)
    if a.json:
        print(json.dumps(out))
    else:
        w = out["warm"]
        print(f"reference (warm): {w['images_per_s']:.1f} images/s, p50 {w['p50_ms']:.1f} ms, p95 {w['p95_ms']:.1f} ms, "
              f"CPU {w['cpu_pct']:.0f}%, wrong {w['wrong']}/{w['images']}; steps {w['steps_ms']}; scores {w['scores']}")
        if "literal" in out:
            lit = out["literal"]
            print(f"reference (demo-literal, reload per image): {lit['images_per_s']:.1f} images/s, "
                  f"p50 {lit['p50_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
