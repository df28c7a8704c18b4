"""The model catalogue: one ``ModelSpec`` per model in the repository."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import onnx

from converters.onnx_edit import make_batch_dynamic, rewrite_prelu, session, unpin_tflite_batch
from converters.quantize import compare_classifier, int8_static, quantization_md
from converters.reference import ReferenceDetector, reference_crops, reference_suriai_crops, video_frames
from converters.spec import ModelSpec, TensorSpec, VariantSpec, max_abs_diff

# Real faces for parity checks; media stays in ../shared, found relative to the sources dir.
def parity_images(sources: Path) -> list[Path]:
    media = sources.parent / "media" / "dev"
    imgs = sorted((media / "images").glob("*.jpg")) + sorted((media / "verification").glob("*.jpg"))
    if len(imgs) < 8:
        raise RuntimeError(f"parity needs >= 8 real face images under {media}, found {len(imgs)}")
    return imgs


def _batch_vs_single(sess, name: str, batch: np.ndarray) -> float:
    batched = sess.run(None, {name: batch})[0]
    single = np.concatenate([sess.run(None, {name: batch[i : i + 1]})[0] for i in range(len(batch))])
    return max_abs_diff(batched, single)


# --- MiniFASNet -------------------------------------------------------------------------------

DEMO_GIF = "videos/silentface_demo.gif"  # 88 frames: real, replay, print (low resolution)
HELD_OUT_VIDEO, HELD_OUT_STEP = "videos/jomariya_real_1.mp4", 20  # every 20th of 800 real frames
VERDICT_IMAGES = {"T1": True, "F1": False, "F2": False}  # images/silentface_image_<k>.jpg: live?


@lru_cache(maxsize=4)
def _antispoof_crops(sources: Path, scale: float) -> dict[str, np.ndarray]:
    """Upstream (RetinaFace + Silent-Face crop) crops of the dev media, by set."""
    media = sources.parent / "media" / "dev"
    return {
        "dev images": reference_crops(sources, parity_images(sources), scale),
        "demo gif frames": reference_crops(sources, video_frames(media / DEMO_GIF), scale),
        "held-out video frames": reference_crops(sources, video_frames(media / HELD_OUT_VIDEO, HELD_OUT_STEP), scale),
    }


def _calibration(scale: float):
    # Calibrate on the dev images and the demo GIF (real, replay and print faces); the other
    # video stays out of calibration so the deviation is also measured on unseen frames.
    def crops(sources: Path) -> np.ndarray:
        sets = _antispoof_crops(sources, scale)
        return np.concatenate([sets["dev images"], sets["demo gif frames"]])

    return crops


# INT8 acceptance (measured, QUANTIZATION.md): int8 noise moves p(live) by 0.02-0.04 on average,
# but by up to ~0.4 on single borderline low-resolution GIF frames whose logits sit where softmax
# is steepest; so the max bound is loose and the mean bound is tight.  A broken quantization
# (quantize_dynamic's ConvInteger: max 0.99, mean 0.23) fails both.
INT8_MAX_DEV, INT8_MEAN_DEV = 0.45, 0.05
INT8_ALTERNATIVES = """## Alternatives measured (MiniFASNetV2 / V1SE, same crops, ms at batch 1, 1 thread; fp32 1.87 ms)

| variant | batch 1 ms | max / mean dp(live) V2 | max / mean dp(live) V1SE |
|---|---|---|---|
| **static QDQ, U8 act, S8 per-channel weights, MinMax (chosen)** | 1.47 | 0.31 / 0.039 | 0.40 / 0.032 |
| static QDQ, S8 act (S8S8) | 2.84 (slower than fp32) | 0.31 / 0.039 | - |
| static QDQ, Percentile 99.999 calibration | 1.52 | 0.29 / 0.022 | 0.29 / 0.037 |
| static QDQ, Conv+MatMul only (PReLU Mul/Max in float) | 1.36 | 0.35 / 0.042 | - |
| static QDQ, stem conv kept float | 1.47 | 0.35 / 0.037 | 0.29 / 0.032 |
| static QDQ, depthwise convs kept float | 1.88 (no gain) | 0.29 / 0.033 | - |
| quantize_dynamic, all (ConvInteger) | 6.87 | 0.99 / 0.231 | - |
| quantize_dynamic, MatMul only | 1.87 (no gain) | 0.006 / 0.001 | - |

MinMax was kept over Percentile: neither is better on both models (Percentile halves V2's mean
deviation but raises V1SE's), MinMax calibrates 5x faster and is exactly reproducible.
No INT8 variant makes MiniFASNet much faster on this CPU: the model is ~0.08 GFLOP of mostly
depthwise and 1x1 convs on small tensors, so QuantizeLinear/DequantizeLinear and the float
PReLU (Mul/Max) around each int8 conv eat most of the gain.  Version 1 stays the served default
(model_policy.toml pins it); version 2 is for canary/shadow comparison."""


def _minifasnet(name: str, src: str, scale: float, pth: str) -> ModelSpec:
    def build(sources: Path) -> onnx.ModelProto:
        return rewrite_prelu(make_batch_dynamic(onnx.load(str(sources / src))))

    def parity(model: onnx.ModelProto, sources: Path) -> dict[str, float]:
        crops = reference_crops(sources, parity_images(sources), scale)
        upstream = session(onnx.load(str(sources / src)))
        ours = session(model)
        ref = np.concatenate([upstream.run(None, {"input": crops[i : i + 1]})[0] for i in range(len(crops))])
        got = ours.run(None, {"input": crops})[0]
        return {
            f"logits vs upstream ({len(crops)} real crops)": max_abs_diff(got, ref),
            "batch of 8 vs 8 x batch 1": _batch_vs_single(ours, "input", crops[:8]),
        }

    calibration = _calibration(scale)
    transform = int8_static(calibration)

    def evaluate(base: onnx.ModelProto, variant: onnx.ModelProto, sources: Path) -> dict:
        sets = _antispoof_crops(sources, scale)
        dev_paths = parity_images(sources)
        verdict = {
            k: (sets["dev images"][i], live)
            for k, live in VERDICT_IMAGES.items()
            for i, p in enumerate(dev_paths)
            if p.name == f"silentface_image_{k}.jpg"
        }
        if len(verdict) != len(VERDICT_IMAGES):
            raise RuntimeError(f"dev images {sorted(VERDICT_IMAGES)} not all found among {[p.name for p in dev_paths]}")
        report = compare_classifier(base, variant, sets, verdict, cls=1, mean_tolerance=INT8_MEAN_DEV)
        report["method"] = transform.method
        report["calibration"] = {"dev images": len(sets["dev images"]), "demo gif frames": len(sets["demo gif frames"])}
        return report

    def notes(report: dict) -> dict[str, str]:
        cal = report["calibration"]
        calib_text = (
            f"{sum(cal.values())} real upstream crops (RetinaFace box, Silent-Face crop at scale {scale}, 80x80 BGR): "
            f"{cal['dev images']} dev images (images/ + verification/) and all {cal['demo gif frames']} frames of "
            f"{DEMO_GIF} (real, replay, print), fed one at a time in a fixed order"
        )
        return {
            "QUANTIZATION.md": quantization_md(
                name, report, INT8_MAX_DEV, INT8_MEAN_DEV, transform.method, calib_text, INT8_ALTERNATIVES
            )
        }

    int8 = VariantSpec(
        version=2,
        description="INT8 static QDQ (per-channel weights, uint8 activations), calibrated on dev crops; see 2/QUANTIZATION.md",
        transform=transform,
        evaluate=evaluate,
        tolerance=INT8_MAX_DEV,
        notes=notes,
    )

    return ModelSpec(
        name=name,
        role="antispoof",
        version=1,
        sources=(src,),
        build=build,
        parity=parity,
        reference_inputs=lambda sources: reference_crops(sources, parity_images(sources)[:8], scale),
        reference_metric="softmax",
        reference_extra={"live_class": 1},
        inputs=(TensorSpec("input", (3, 80, 80)),),
        outputs=(TensorSpec("output", (3,)),),
        max_batch_size=32,
        # No waiting: requests that queue while the model is busy form the batch.  Measured on
        # 2 cores (docs/PERFORMANCE.md): waiting 2 ms cost 15-40% throughput at every load.
        max_queue_delay_us=0,
        # The runtime's whole description of the model (liveness/antispoof/spec.py): Silent-Face
        # crop, 80x80, BGR, raw 0..255 (upstream's patched ToTensor does no scaling), softmax,
        # class 1 = live (0 and 2 are the spoof classes).
        parameters={
            "crop": "silentface",
            "crop_scale": str(scale),
            "input_size": "80",
            "color": "BGR",
            "input_divisor": "1",
            "live_class": "1",
            "activation": "softmax",
            "upstream_weights": pth,
        },
        licence="Apache-2.0",
        upstream="minivision-ai/Silent-Face-Anti-Spoofing (ONNX export by yakhyo/face-anti-spoofing)",
        variants=(int8,),
    )


MINIFASNET_V2 = _minifasnet("minifasnet_v2", "antispoof/minifasnet/MiniFASNetV2.onnx", 2.7, "2.7_80x80_MiniFASNetV2.pth")
MINIFASNET_V1SE = _minifasnet(
    "minifasnet_v1se", "antispoof/minifasnet/MiniFASNetV1SE.onnx", 4.0, "4_0_0_80x80_MiniFASNetV1SE.pth"
)

# --- SuriAI MiniFASNetV2-SE 128 (optional; trained on CelebA-Spoof, off by default) ----------

SURIAI_SRC = "antispoof/suriai_minifasnetv2se/best_model_97.80.onnx"


@lru_cache(maxsize=2)
def _suriai_crops(sources: Path) -> np.ndarray:
    """Upstream-preprocessed inputs (converters.reference: square 1.5x, reflect, letterbox 128,
    RGB, /255) of the reference RetinaFace face in every dev parity image."""
    return reference_suriai_crops(sources, parity_images(sources))


def _suriai_build(sources: Path) -> onnx.ModelProto:
    model = onnx.load(str(sources / SURIAI_SRC))
    # MANIFEST says the upstream export already has a dynamic batch: verified, not assumed.
    for vi in list(model.graph.input) + list(model.graph.output):
        dim0 = vi.type.tensor_type.shape.dim[0]
        if not dim0.dim_param:
            raise RuntimeError(f"{SURIAI_SRC}: {vi.name} batch dim is fixed ({dim0.dim_value}); the converter expects a dynamic one")
    return rewrite_prelu(model)  # exact (Max(x, slope*x)); ORT's PRelu kernel is slow


def _suriai_parity(model: onnx.ModelProto, sources: Path) -> dict[str, float]:
    crops = _suriai_crops(sources)
    upstream, ours = session(onnx.load(str(sources / SURIAI_SRC))), session(model)
    ref = np.concatenate([upstream.run(None, {"input": crops[i : i + 1]})[0] for i in range(len(crops))])
    got = ours.run(None, {"input": crops})[0]
    if got.shape != (len(crops), 2):
        raise RuntimeError(f"suriai: a batch of {len(crops)} gave output shape {got.shape}")
    live = lambda z: 1.0 / (1.0 + np.exp(-(z[:, 0].astype(np.float64) - z[:, 1])))  # noqa: E731
    return {
        f"logits vs upstream ({len(crops)} real crops, one batch)": max_abs_diff(got, ref),
        "p(live) = sigmoid(real - spoof) vs upstream": max_abs_diff(live(got), live(ref)),
        "batch of 8 vs 8 x batch 1": _batch_vs_single(ours, "input", crops[:8]),
    }


SURIAI = ModelSpec(
    name="suriai_minifasnetv2se",
    role="antispoof",
    version=1,
    sources=(SURIAI_SRC,),
    build=_suriai_build,
    parity=_suriai_parity,
    reference_inputs=lambda sources: _suriai_crops(sources)[:8],
    # 2-class softmax of the live column == sigmoid(real - spoof): the validator's metric fits.
    reference_metric="softmax",
    reference_extra={"live_class": 0},
    inputs=(TensorSpec("input", (3, 128, 128)),),
    outputs=(TensorSpec("output", (2,)),),
    max_batch_size=32,
    max_queue_delay_us=0,
    # No INT8 version: the float model is already ~0.1 GFLOP of depthwise/1x1 convs, where INT8
    # did not pay on MiniFASNet (QUANTIZATION.md); not measured for this one.
    parameters={
        "crop": "square_reflect",
        "crop_scale": "1.5",
        "input_size": "128",
        "color": "RGB",
        "input_divisor": "255",
        "live_class": "0",
        "activation": "sigmoid_diff",
        "face_box": "the service's detector box (RetinaFace by default), truncated to whole pixels; upstream's demo uses YuNet",
        "training_data": "CelebA-Spoof (non-commercial research licence): optional, not in antispoof_models by default",
        "upstream_weights": "models/best/97.80/best_model.onnx",
    },
    licence="Apache-2.0 (code and weights); trained on CelebA-Spoof, non-commercial research data: off by default",
    upstream="johnraivenolazo/face-antispoof-onnx models/best/97.80/best_model.onnx @ 2b0a221 (MiniFASNetV2-SE, 128x128)",
)

# --- YuNet ------------------------------------------------------------------------------------

YUNET_SRC = "detection/yunet/yunet_s_dynamic.onnx"
YUNET_OUTPUTS = tuple(
    TensorSpec(f"{kind}_{s}", (-1, k)) for kind, k in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)) for s in (8, 16, 32)
)


def _yunet_input(path: Path) -> np.ndarray:
    return cv2.resize(cv2.imread(str(path)), (320, 416)).transpose(2, 0, 1)[None].astype(np.float32)


def _yunet_build(sources: Path) -> onnx.ModelProto:
    # Already has a dynamic batch and spatial dims upstream; copied as is.
    return onnx.load(str(sources / YUNET_SRC))


def _yunet_parity(model: onnx.ModelProto, sources: Path) -> dict[str, float]:
    imgs = [cv2.resize(cv2.imread(str(p)), (320, 416)) for p in parity_images(sources)[:8]]
    batch = np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32)
    upstream = session(onnx.load(str(sources / YUNET_SRC)))
    ours = session(model)
    diffs = [
        max_abs_diff(a, b)
        for i in range(len(batch))
        for a, b in zip(upstream.run(None, {"input": batch[i : i + 1]}), ours.run(None, {"input": batch[i : i + 1]}))
    ]
    batched = ours.run(None, {"input": batch})
    singles = [ours.run(None, {"input": batch[i : i + 1]}) for i in range(len(batch))]
    bdiff = max(
        max_abs_diff(batched[k], np.concatenate([s[k] for s in singles])) for k in range(len(batched))
    )
    return {"outputs vs upstream": max(diffs), "batch of 8 vs 8 x batch 1": bdiff}


YUNET = ModelSpec(
    name="yunet",
    role="detector",
    version=1,
    sources=(YUNET_SRC,),
    build=_yunet_build,
    parity=_yunet_parity,
    reference_inputs=lambda sources: _yunet_input(parity_images(sources)[0]),
    inputs=(TensorSpec("input", (3, -1, -1)),),
    outputs=YUNET_OUTPUTS,
    max_batch_size=8,
    max_queue_delay_us=0,
    # The runtime's description of the model (liveness/detection/yunet.py reads every number).
    parameters={
        "architecture": "yunet",
        "color": "BGR",
        "normalisation": "none (raw 0..255)",
        "pad_multiple": "32",
        "max_side": "640",
        "nms_threshold": "0.3",
    },
    licence="Apache-2.0 (libfacedetection.train); MIT (opencv_zoo)",
    upstream="ShiqiYu/libfacedetection.train onnx/yunet_s_dynamic.onnx",
)

# --- RetinaFace (Caffe -> ONNX) ---------------------------------------------------------------

RETINA_SRC = ("detection/retinaface_caffe/deploy.prototxt", "detection/retinaface_caffe/Widerface-RetinaFace.caffemodel")


def _retina_input(path: Path) -> np.ndarray:
    from converters.caffe_to_onnx import preprocess_upstream

    return preprocess_upstream(cv2.imread(str(path)))


def _retina_build(sources: Path) -> onnx.ModelProto:
    from converters.caffe_to_onnx import convert_caffe

    return convert_caffe(sources / RETINA_SRC[0], sources / RETINA_SRC[1])


def _retina_parity(model: onnx.ModelProto, sources: Path) -> dict[str, float]:
    from converters.caffe_to_onnx import parity_check

    imgs = [cv2.imread(str(p)) for p in parity_images(sources)]
    return parity_check(model, sources / RETINA_SRC[0], sources / RETINA_SRC[1], imgs)


RETINAFACE = ModelSpec(
    name="retinaface",
    role="detector",
    version=1,
    sources=RETINA_SRC,
    build=_retina_build,
    parity=_retina_parity,
    reference_inputs=lambda sources: _retina_input(parity_images(sources)[0]),
    inputs=(TensorSpec("data", (3, -1, -1)),),
    outputs=(TensorSpec("loc", (-1, 4)), TensorSpec("conf", (-1, 2))),
    max_batch_size=8,
    max_queue_delay_us=0,
    # The runtime's description of the model (liveness/detection/retinaface.py reads every number):
    # upstream's preprocessing and the dropped Caffe DetectionOutput layer's settings.
    parameters={
        "architecture": "retinaface",
        "color": "BGR",
        "mean": "104,117,123",
        "resize_area": "36864",
        "variances": "0.1,0.1,0.2,0.2",
        "conf_threshold": "0.1",
        "nms_threshold": "0.3",
        "top_k": "400",
        "keep_top_k": "200",
    },
    licence="Apache-2.0",
    upstream="minivision-ai/Silent-Face-Anti-Spoofing resources/detection_model (Caffe), converted here",
)

# --- MediaPipe face mesh and iris (tflite2onnx exports, batch pinned to 1 upstream) ---------------

FACEMESH_SRC = "landmarks/mediapipe_facemesh/face_landmark_barracuda.onnx"
IRIS_SRC = "landmarks/mediapipe_iris/iris_landmark_barracuda.onnx"


def _landmark_images(sources: Path) -> list[Path]:
    media = sources.parent / "media" / "dev"
    return parity_images(sources) + sorted((media / "landmarks").glob("*.jpg"))


@lru_cache(maxsize=2)
def _landmark_crops(sources: Path) -> tuple[np.ndarray, np.ndarray]:
    """Real inputs: face-mesh crops of the reference detector's face in every dev image, and
    both eye crops (right, mirrored left) placed by the UPSTREAM face mesh on those faces.
    Images where the reference detector finds no face (>= 0.6) are skipped."""
    from liveness.detection.base import Face
    from liveness.landmarks.crop import to_input
    from liveness.landmarks.facemesh import N_POINTS, crop_for
    from liveness.landmarks.iris import LEFT_CORNERS, RIGHT_CORNERS, crop_eye

    det = ReferenceDetector(sources)
    mesh = session(onnx.load(str(sources / FACEMESH_SRC)))
    faces, eyes = [], []
    for p in _landmark_images(sources):
        img = cv2.imread(str(p))
        found = det.detect(img)
        if found.confidence < 0.6:  # upstream's threshold; it misses the scanned landmark prints
            continue
        x, y, w, h = found.bbox
        crop, meta = crop_for(img, Face(x, y, w, h, 1.0))
        faces.append(crop)
        pts = meta.to_image(mesh.run(None, {"input_1": to_input([crop])})[0].reshape(N_POINTS, 3))
        eyes += [crop_eye(img, pts, RIGHT_CORNERS, False)[0], crop_eye(img, pts, LEFT_CORNERS, True)[0]]
    return to_input(faces), to_input(eyes)


def _landmark_build(src: str):
    def build(sources: Path) -> onnx.ModelProto:
        return rewrite_prelu(make_batch_dynamic(unpin_tflite_batch(onnx.load(str(sources / src)))))

    return build


def _landmark_parity(src: str, which: int):
    def parity(model: onnx.ModelProto, sources: Path) -> dict[str, float]:
        x = _landmark_crops(sources)[which]
        upstream, ours = session(onnx.load(str(sources / src))), session(model)
        ref = [upstream.run(None, {"input_1": x[i : i + 1]}) for i in range(len(x))]
        got = ours.run(None, {"input_1": x})
        singles = [ours.run(None, {"input_1": x[i : i + 1]}) for i in range(8)]
        batch8 = ours.run(None, {"input_1": x[:8]})
        what = "face crops" if which == 0 else "eye crops"
        return {
            f"outputs vs upstream ({len(x)} real {what}, one batch)": max(
                max_abs_diff(g, np.concatenate([r[k] for r in ref])) for k, g in enumerate(got)
            ),
            "batch of 8 vs 8 x batch 1": max(
                max_abs_diff(b, np.concatenate([s[k] for s in singles])) for k, b in enumerate(batch8)
            ),
        }

    return parity


FACEMESH = ModelSpec(
    name="facemesh",
    role="landmarks",
    version=1,
    sources=(FACEMESH_SRC,),
    build=_landmark_build(FACEMESH_SRC),
    parity=_landmark_parity(FACEMESH_SRC, 0),
    reference_inputs=lambda sources: _landmark_crops(sources)[0][:8],
    inputs=(TensorSpec("input_1", (3, 192, 192)),),
    outputs=(TensorSpec("conv2d_20", (1404, 1, 1)), TensorSpec("conv2d_30", (1, 1, 1))),
    max_batch_size=16,
    max_queue_delay_us=0,
    # liveness/landmarks/facemesh.py reads the numbers: input = x / input_divisor - input_mean.
    parameters={
        "architecture": "facemesh",
        "crop_scale": "1.5",
        "input_size": "192",
        "color": "RGB",
        "normalisation": "x/127.5-1",
        "input_divisor": "127.5",
        "input_mean": "1",
        "points": "468 x (x,y,z) in input-size crop pixels; conv2d_30 = presence logit",
    },
    licence="Apache-2.0",
    upstream="keijiro/FaceMeshBarracuda face_landmark_barracuda.onnx (MediaPipe face_landmark, tflite2onnx)",
)

IRIS = ModelSpec(
    name="iris",
    role="landmarks",
    version=1,
    sources=(IRIS_SRC,),
    build=_landmark_build(IRIS_SRC),
    parity=_landmark_parity(IRIS_SRC, 1),
    reference_inputs=lambda sources: _landmark_crops(sources)[1][:8],
    inputs=(TensorSpec("input_1", (3, 64, 64)),),
    outputs=(TensorSpec("output_eyes_contours_and_brows", (213,)), TensorSpec("output_iris", (15,))),
    max_batch_size=16,
    max_queue_delay_us=0,
    # liveness/landmarks/iris.py reads the numbers: input = x / input_divisor - input_mean.
    parameters={
        "architecture": "iris",
        "crop_scale": "2.3",
        "input_size": "64",
        "color": "RGB",
        "normalisation": "x/127.5-1",
        "input_divisor": "127.5",
        "input_mean": "1",
        "eye_corners": "right 33/133, left 362/263 (mesh); left eye crop mirrored",
        "points": "71 x (x,y,z) contour (first 16 = eyelid) + 5 x (x,y,z) iris, input-size crop pixels",
    },
    licence="Apache-2.0",
    upstream="keijiro/IrisBarracuda iris_landmark_barracuda.onnx (MediaPipe iris_landmark, tflite2onnx)",
)

# --- MobileFaceNet (face embedding; upstream ONNX pins batch 1) ------------------------------------

MOBILEFACENET_SRC = "recognition/mobilefacenet/MobileFaceNet.onnx"


def verification_images(sources: Path) -> list[Path]:
    """The dev verification set (11 celebrity photos, 5 identities; pairs.csv, identities.csv)."""
    imgs = sorted((sources.parent / "media" / "dev" / "verification").glob("*.jpg"))
    if len(imgs) < 8:
        raise RuntimeError(f"recognition parity needs >= 8 verification images, found {len(imgs)}")
    return imgs


@lru_cache(maxsize=2)
def _aligned_faces(sources: Path) -> np.ndarray:
    """Real inputs: the largest face of every verification image, found by the UPSTREAM YuNet file
    (our decode, identical to cv2.FaceDetectorYN), 5-point aligned onto the ArcFace template and
    preprocessed exactly as upstream (RGB, /255, ImageNet mean/std): (N, 3, 112, 112) float32."""
    from liveness.detection.yunet import YuNet
    from liveness.recognition.align import align_face
    from liveness.recognition.mobilefacenet import MobileFaceNet

    det, embedder = YuNet(confidence=0.6), MobileFaceNet()
    yunet = session(onnx.load(str(sources / YUNET_SRC)))
    names = [t.name for t in YUNET_OUTPUTS]
    rows = []
    for p in verification_images(sources):
        img = cv2.imread(str(p))
        x, meta = det.preprocess(img)
        faces = det.postprocess(yunet.run(names, {"input": x}), meta)
        if not faces:
            raise RuntimeError(f"{p}: YuNet found no face for the recognition parity check")
        face = max(faces, key=lambda f: f.area)
        rows.append(embedder.preprocess(align_face(img, face.keypoints)))
    return np.stack(rows)


def unpin_batch_reshape(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Reshape(x, [1, -1])`` -> ``Flatten(x, axis=1)``, with the shape given by a ``Constant``
    node (torch.onnx's way) or an initializer.  The PyTorch export of MobileFaceNet ends with
    ``x.view(1, -1)`` baked in as such a Reshape, which would fold a batch of N into one row."""
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant" and len(n.output) == 1}
    inits = {i.name: i for i in g.initializer}

    def value(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = consts.get(name)
        attr = next((a for a in node.attribute if a.name == "value"), None) if node is not None else None
        return numpy_helper.to_array(attr.t) if attr is not None else None

    nodes, replaced = [], 0
    for n in g.node:
        shape = value(n.input[1]) if n.op_type == "Reshape" else None
        if shape is not None and shape.tolist() == [1, -1]:
            nodes.append(helper.make_node("Flatten", [n.input[0]], list(n.output), name=n.name or n.output[0], axis=1))
            replaced += 1
        else:
            nodes.append(n)
    if not replaced:
        raise RuntimeError("no Reshape(x, [1, -1]) found: the upstream graph changed, check the batch edit")
    used = {i for n in nodes for i in n.input}
    nodes = [n for n in nodes if not (n.op_type == "Constant" and n.output[0] not in used and n.output[0] in consts)]
    del g.node[:]
    g.node.extend(nodes)
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(m)
    return m


def _mobilefacenet_build(sources: Path) -> onnx.ModelProto:
    return make_batch_dynamic(unpin_batch_reshape(onnx.load(str(sources / MOBILEFACENET_SRC))))


def _mobilefacenet_parity(model: onnx.ModelProto, sources: Path) -> dict[str, float]:
    x = _aligned_faces(sources)
    upstream, ours = session(onnx.load(str(sources / MOBILEFACENET_SRC))), session(model)
    ref = np.concatenate([upstream.run(None, {"input0": x[i : i + 1]})[0] for i in range(len(x))])
    got = ours.run(None, {"input0": x})[0]
    if got.shape != (len(x), 128):
        raise RuntimeError(f"mobilefacenet: a batch of {len(x)} gave output shape {got.shape}")
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    return {
        f"raw embeddings vs upstream ({len(x)} real aligned faces, one batch)": max_abs_diff(got, ref),
        "cosine to upstream, 1 - min": float(1.0 - np.min(np.sum(unit(got.astype(np.float64)) * unit(ref.astype(np.float64)), axis=1))),
        "batch of 8 vs 8 x batch 1": _batch_vs_single(ours, "input0", x[:8]),
    }


MOBILEFACENET = ModelSpec(
    name="mobilefacenet",
    role="embedder",
    version=1,
    sources=(MOBILEFACENET_SRC,),
    build=_mobilefacenet_build,
    parity=_mobilefacenet_parity,
    reference_inputs=lambda sources: _aligned_faces(sources)[:8],
    inputs=(TensorSpec("input0", (3, 112, 112)),),
    outputs=(TensorSpec("output0", (128,)),),
    max_batch_size=16,
    max_queue_delay_us=0,
    # liveness/recognition/mobilefacenet.py reads the numbers and the template.
    parameters={
        "architecture": "mobilefacenet",
        "input_size": "112",
        "color": "RGB",
        "normalisation": "x/255, then (x - mean) / std per channel",
        "input_divisor": "255",
        "mean": "0.485,0.456,0.406",
        "std": "0.229,0.224,0.225",
        "alignment": "5-point similarity (Umeyama, no reflection) onto the ArcFace 112x112 template, bilinear, black border",
        "template": "38.2946,51.6963,73.5318,51.5014,56.0252,71.7366,41.5493,92.3655,70.7299,92.2041",
        "embedding": "128 floats, raw (norm ~18-21); L2-normalise, compare by cosine",
        "training_data": "refined MS-Celeb-1M (withdrawn 2019, non-commercial research; see docs/VERIFICATION.md)",
    },
    licence="Apache-2.0 (code and weights); training data MS-Celeb-1M, see docs/VERIFICATION.md",
    upstream="foamliu/MobileFaceNet weights/MobileFaceNet.onnx @ 408e13c (export of release v1.0 mobilefacenet.pt)",
)

CATALOGUE: tuple[ModelSpec, ...] = (
    RETINAFACE, YUNET, MINIFASNET_V2, MINIFASNET_V1SE, SURIAI, FACEMESH, IRIS, MOBILEFACENET
)
