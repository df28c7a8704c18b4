"""The peer: the upstream Silent-Face-Anti-Spoofing pipeline, one image at a time, in-process.

    python benchmarks/bench_reference.py [--seconds 10] [--json] [--mix DIR|phone]

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

``--mix DIR`` (a folder written by ``benchmarks/phone_mix.py``, with its ``labels.csv``) or
``--mix phone`` (the same mix made in memory): the warm peer on those images instead, in their
order, whole cycles only (so every image counts equally), with the median step times per
megapixel class as well.  The peer judges the very bytes the service gets: ``cv2.imdecode`` with
``IMREAD_COLOR`` at full resolution, which applies the EXIF orientation as upstream's
``cv2.imread`` does (OpenCV >= 3.1), so the 8 and 12 MP photos stored landscape come out 3:4
portrait and pass ``check_image``.  Wrong verdicts are counted, not fatal, on a mix: upstream was
never tuned for these framings.
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


def load_mix(spec: str) -> tuple[list[tuple[str, bool, bytes]], dict[str, str]]:
    """(images, name -> "N MP") of ``--mix``: a folder with labels.csv, or "phone" (made here)."""
    from phone_mix import read_mix, write_mix  # benchmarks/ is sys.path[0] when run as a script

    folder = Path(spec)
    if spec == "phone":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="phone-mix-") as tmp:  # read into memory, then gone
            write_mix(Path(tmp))
            mix = read_mix(Path(tmp))
    elif not (folder / "labels.csv").is_file():
        sys.exit(f"--mix: {folder} has no labels.csv (write one with benchmarks/phone_mix.py)")
    else:
        mix = read_mix(folder)
    return [(m.name, m.live, m.raw) for m in mix], {m.name: f"{m.megapixels} MP" for m in mix}


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def measure_warm(images: list[tuple[str, bool, bytes]], seconds: float, group_of: dict[str, str] | None = None,
                 whole_cycles: bool = False) -> dict:
    """The warm peer over ``images`` in order for ``seconds``.  ``group_of`` (name -> group, e.g.
    "12 MP"): median step times per group too; ``whole_cycles``: stop only after a whole pass
    over ``images``, so a mix keeps its proportions."""
    ref = Reference()
    for i in range(6):  # warm-up
        ref.run(images[i % len(images)][2])
    lat: list[float] = []
    steps: dict[str, list[float]] = {"decode": [], "detect": [], "classify": []}
    by_group: dict[str, dict[str, list[float]]] = {}
    wrong, i = 0, 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    stop = t0 + seconds
    while time.perf_counter() < stop or len(lat) < 10 or (whole_cycles and i % len(images)):
        name, live, raw = images[i % len(images)]
        s = time.perf_counter()
        is_live, _score, st = ref.run(raw)
        lat.append(time.perf_counter() - s)
        for k, v in st.items():
            steps[k].append(v)
        if group_of:
            g = by_group.setdefault(group_of[name], {"total": [], "decode": [], "detect": [], "classify": []})
            g["total"].append(lat[-1])
            for k, v in st.items():
                g[k].append(v)
        wrong += is_live != live
        i += 1
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    out = {
        "images": len(lat), "seconds": elapsed, "wrong": wrong,
        "images_per_s": len(lat) / elapsed,
        "p50_ms": pct(lat, 50) * 1000, "p95_ms": pct(lat, 95) * 1000, "p99_ms": pct(lat, 99) * 1000,
        "mean_ms": statistics.mean(lat) * 1000,
        "steps_ms": {k: statistics.median(v) * 1000 for k, v in steps.items()},
        # Mean per image, so the steps add up to the mean latency (a mix's medians would not).
        "steps_mean_ms": {k: statistics.mean(v) * 1000 for k, v in steps.items()},
        "cpu_pct": 100 * cpu / elapsed,
        "cpu_ms_per_image": 1000 * cpu / len(lat),
        "scores": {name: round(ref.run(raw)[1], 4) for name, _live, raw in images},
    }
    if group_of:
        out["groups"] = {g: {"images": len(v["total"]), **{f"{k}_ms": statistics.median(x) * 1000 for k, x in v.items()}}
                         for g, v in by_group.items()}
        # Which images the peer judges wrongly (the score dict above says how wrongly).
        out["wrong_images"] = [name for name, live, raw in images if ref.run(raw)[0] != live]
    return out


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
    ap.add_argument("--mix", default=None,
                    help="judge this image set instead of T1/F1/F2: a folder with labels.csv "
                         "(benchmarks/phone_mix.py) or 'phone' (the phone-photo mix, made here); implies --literal 0")
    a = ap.parse_args()
    if a.mix:
        images, group_of = load_mix(a.mix)
        a.literal = 0  # the demo-literal variant is information only, and only on the dev images
    else:
        images, group_of = load_images(), None
    out = {
        "cv2": cv2.__version__, "onnxruntime": ort.__version__,
        "cv2_threads": cv2.getNumThreads(),
        "ort_intra_op_threads": "default (0 = one per core)",
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "images_set": a.mix or "dev (T1, F1, F2)",
        "warm": measure_warm(images, a.seconds, group_of, whole_cycles=bool(a.mix)),
    }
    if a.literal > 0:
        out["literal"] = measure_literal(images, a.literal)
    if a.json:
        print(json.dumps(out))
    else:
        w = out["warm"]
        print(f"reference (warm): {w['images_per_s']:.1f} images/s, p50 {w['p50_ms']:.1f} ms, p95 {w['p95_ms']:.1f} ms, "
              f"CPU {w['cpu_pct']:.0f}%, wrong {w['wrong']}/{w['images']}; steps {w['steps_ms']}; scores {w['scores']}")
        for g, v in w.get("groups", {}).items():
            print(f"  {g}: {v['images']} images, median {v['total_ms']:.1f} ms (decode {v['decode_ms']:.1f}, "
                  f"detect {v['detect_ms']:.1f}, classify {v['classify_ms']:.1f})")
        if "literal" in out:
            lit = out["literal"]
            print(f"reference (demo-literal, reload per image): {lit['images_per_s']:.1f} images/s, "
                  f"p50 {lit['p50_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
