"""The model catalogue: one ``ModelSpec`` per model in the repository."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx

from converters.onnx_edit import make_batch_dynamic, rewrite_prelu, session
from converters.reference import reference_crops
from converters.spec import ModelSpec, TensorSpec, max_abs_diff

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

    return ModelSpec(
        name=name,
        role="antispoof",
        version=1,
        sources=(src,),
        build=build,
        parity=parity,
        inputs=(TensorSpec("input", (3, 80, 80)),),
        outputs=(TensorSpec("output", (3,)),),
        max_batch_size=32,
        # No waiting: requests that queue while the model is busy form the batch.  Measured on
        # 2 cores (docs/PERFORMANCE.md): waiting 2 ms cost 15-40% throughput at every load.
        max_queue_delay_us=0,
        parameters={
            "crop_scale": str(scale),
            "input_size": "80",
            "color": "BGR",
            "normalisation": "none (raw 0..255)",
            "live_class": "1",
            "upstream_weights": pth,
        },
        licence="Apache-2.0",
        upstream="minivision-ai/Silent-Face-Anti-Spoofing (ONNX export by yakhyo/face-anti-spoofing)",
    )


MINIFASNET_V2 = _minifasnet("minifasnet_v2", "antispoof/minifasnet/MiniFASNetV2.onnx", 2.7, "2.7_80x80_MiniFASNetV2.pth")
MINIFASNET_V1SE = _minifasnet(
    "minifasnet_v1se", "antispoof/minifasnet/MiniFASNetV1SE.onnx", 4.0, "4_0_0_80x80_MiniFASNetV1SE.pth"
)

# --- YuNet ------------------------------------------------------------------------------------

YUNET_SRC = "detection/yunet/yunet_s_dynamic.onnx"
YUNET_OUTPUTS = tuple(
    TensorSpec(f"{kind}_{s}", (-1, k)) for kind, k in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)) for s in (8, 16, 32)
)


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
    inputs=(TensorSpec("input", (3, -1, -1)),),
    outputs=YUNET_OUTPUTS,
    max_batch_size=8,
    max_queue_delay_us=0,
    parameters={"color": "BGR", "normalisation": "none (raw 0..255)", "pad_multiple": "32", "max_side": "640"},
    licence="Apache-2.0 (libfacedetection.train); MIT (opencv_zoo)",
    upstream="ShiqiYu/libfacedetection.train onnx/yunet_s_dynamic.onnx",
)

# --- RetinaFace (Caffe -> ONNX) ---------------------------------------------------------------

RETINA_SRC = ("detection/retinaface_caffe/deploy.prototxt", "detection/retinaface_caffe/Widerface-RetinaFace.caffemodel")


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
    inputs=(TensorSpec("data", (3, -1, -1)),),
    outputs=(TensorSpec("loc", (-1, 4)), TensorSpec("conf", (-1, 2))),
    max_batch_size=8,
    max_queue_delay_us=0,
    parameters={
        "color": "BGR",
        "mean": "104,117,123",
        "resize_area": "36864",
        "variances": "0.1,0.1,0.2,0.2",
        "nms_threshold": "0.3",
    },
    licence="Apache-2.0",
    upstream="minivision-ai/Silent-Face-Anti-Spoofing resources/detection_model (Caffe), converted here",
)

CATALOGUE: tuple[ModelSpec, ...] = (RETINAFACE, YUNET, MINIFASNET_V2, MINIFASNET_V1SE)
