"""Caffe (prototxt + caffemodel) -> ONNX converter, written for the RetinaFace detector.

No caffe / protoc dependency: the prototxt text format is parsed by a small tokenizer and the
binary ``.caffemodel`` by a hand-written protobuf wire-format decoder that only extracts what
is needed (layer names and weight blobs).

The produced graph:
  * input  ``data``  float32 [batch, 3, height, width] (all three dims symbolic; the caller
    does the BGR mean (104, 117, 123) subtraction, nothing is baked in);
  * PriorBox / DetectionOutput (and everything that only feeds them) are dropped;
  * outputs ``loc`` float32 [N, P, 4] (mbox_loc reshaped) and ``conf`` float32 [N, P, C]
    (the softmaxed class probabilities fed to DetectionOutput; class 1 = face).

Decoding priors / NMS lives in ``liveness.detection.retinaface_post`` (pure numpy).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from liveness.inference import pbtxt
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

# --------------------------------------------------------------------------------------------
# prototxt (protobuf text format) parser
# --------------------------------------------------------------------------------------------

def parse_prototxt(text: str) -> dict[str, list[Any]]:
    """Protobuf text format into ``{field: [values...]}``: the same reader as config.pbtxt."""
    return pbtxt.loads(text)


def _get(msg: dict | None, key: str, default: Any = None) -> Any:
    if not msg or key not in msg:
        return default
    return msg[key][-1]


def _getall(msg: dict | None, key: str) -> list[Any]:
    if not msg:
        return []
    return list(msg.get(key, []))


# --------------------------------------------------------------------------------------------
# caffemodel (protobuf binary) decoder
# --------------------------------------------------------------------------------------------


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview):
    """Yield (field_number, wire_type, value); value is int for varint/fixed, memoryview for LD."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        fno, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            val = buf[pos:pos + 8]
            pos += 8
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            val = buf[pos:pos + ln]
            pos += ln
        elif wt == 5:
            val = buf[pos:pos + 4]
            pos += 4
        else:  # groups (3/4) are not used by caffe.proto
            raise ValueError(f"caffemodel: unsupported wire type {wt}")
        yield fno, wt, val


def _packed_varints(buf: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


def _to_int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _decode_blob(buf: memoryview) -> np.ndarray:
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    dims: list[int] | None = None
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    has_legacy = False
    for fno, wt, val in _fields(buf):
        if fno == 5:  # data (float): packed (wire type 2) or one fixed32 per value (wire type 5)
            floats.append(np.frombuffer(val, dtype="<f4"))
        elif fno == 8:  # double_data
            doubles.append(np.frombuffer(val, dtype="<f8"))
        elif fno == 7 and wt == 2:  # BlobShape
            dims = [] if dims is None else dims
            for f2, w2, v2 in _fields(val):
                if f2 == 1:
                    if w2 == 2:
                        dims.extend(_to_int64(x) for x in _packed_varints(v2))
                    else:
                        dims.append(_to_int64(v2))
        elif fno in legacy and wt == 0:
            legacy[fno] = _to_int64(val)
            has_legacy = True
    if floats:
        data = np.concatenate(floats).astype(np.float32)
    elif doubles:
        data = np.concatenate(doubles).astype(np.float32)
    else:
        data = np.zeros(0, np.float32)
    if dims is None:
        dims = [legacy[1], legacy[2], legacy[3], legacy[4]] if has_legacy else [data.size]
    if int(np.prod(dims)) != data.size:
        raise ValueError(f"caffemodel: blob shape {dims} does not match {data.size} values")
    return data.reshape(dims)


def parse_caffemodel(data: bytes) -> dict[str, list[np.ndarray]]:
    """Return ``{layer_name: [blobs...]}`` from a binary NetParameter (new and V1 layers)."""
    buf = memoryview(data)
    out: dict[str, list[np.ndarray]] = {}
    for fno, wt, val in _fields(buf):
        if wt != 2 or fno not in (100, 2):
            continue
        # LayerParameter: name=1, blobs=7; V1LayerParameter: name=4, blobs=6
        name_f, blob_f = (1, 7) if fno == 100 else (4, 6)
        name = None
        blobs: list[np.ndarray] = []
        for f2, w2, v2 in _fields(val):
            if f2 == name_f and w2 == 2:
                name = bytes(v2).decode("utf-8")
            elif f2 == blob_f and w2 == 2:
                blobs.append(_decode_blob(v2))
        if name is not None and blobs:
            out[name] = blobs
    return out


# --------------------------------------------------------------------------------------------
# graph builder
# --------------------------------------------------------------------------------------------

_V1_TYPES = {  # V1LayerParameter.LayerType enum values that may appear as text
    "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "RELU": "ReLU",
    "CONCAT": "Concat", "ELTWISE": "Eltwise", "FLATTEN": "Flatten", "SOFTMAX": "Softmax",
    "POOLING": "Pooling", "DROPOUT": "Dropout", "SPLIT": "Split", "INNER_PRODUCT": "InnerProduct",
}


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.names: set[str] = set()
        self.counter = 0

    def fresh(self, base: str) -> str:
        name = base
        while name in self.names:
            self.counter += 1
            name = f"{base}__{self.counter}"
        self.names.add(name)
        return name

    def const(self, base: str, arr: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], out_base: str, name: str | None = None,
             **attrs: Any) -> str:
        out = self.fresh(out_base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(name or out + "_" + op),
                                           **attrs))
        return out


def _pair(param: dict, key: str, key_h: str, key_w: str, default: int) -> tuple[int, int]:
    if key_h in param or key_w in param:
        return int(_get(param, key_h, default)), int(_get(param, key_w, default))
    vals = [int(v) for v in _getall(param, key)]
    if not vals:
        return default, default
    if len(vals) == 1:
        return vals[0], vals[0]
    return vals[0], vals[1]


def _layers_of(net: dict) -> list[dict]:
    layers = _getall(net, "layer")
    if not layers:  # legacy V1 "layers"
        layers = []
        for l in _getall(net, "layers"):
            l = dict(l)
            t = _get(l, "type")
            l["type"] = [_V1_TYPES.get(str(t), str(t))]
            layers.append(l)
    return layers


def _input_blobs(net: dict, layers: list[dict]) -> list[str]:
    names = [str(n) for n in _getall(net, "input")]
    for l in layers:
        if _get(l, "type") == "Input":
            names.extend(str(t) for t in _getall(l, "top"))
    return names


def convert_caffe(prototxt: Path, caffemodel: Path) -> onnx.ModelProto:
    net = parse_prototxt(Path(prototxt).read_text())
    weights = parse_caffemodel(Path(caffemodel).read_bytes())
    layers = _layers_of(net)

    # Keep TEST-phase layers only (include/exclude rules).
    def in_test(l: dict) -> bool:
        for inc in _getall(l, "include"):
            if _get(inc, "phase", "TEST") not in ("TEST", 1):
                return False
        for exc in _getall(l, "exclude"):
            if _get(exc, "phase") in ("TEST", 1):
                return False
        return True

    layers = [l for l in layers if in_test(l)]
    inputs = _input_blobs(net, layers)
    if len(inputs) != 1:
        raise ValueError(f"expected exactly one network input, got {inputs}")
    data_name = inputs[0]

    det_layers = [l for l in layers if _get(l, "type") == "DetectionOutput"]
    if len(det_layers) != 1:
        raise ValueError("expected exactly one DetectionOutput layer")
    det = det_layers[0]
    det_bottoms = [str(b) for b in _getall(det, "bottom")]
    num_classes = int(_get(_get(det, "detection_output_param"), "num_classes"))
    if not bool(_get(_get(det, "detection_output_param"), "share_location", True)):
        raise NotImplementedError("share_location=false is not supported")

    b = _Builder()
    cur: dict[str, str] = {}  # caffe blob name -> current ONNX tensor name
    rank: dict[str, int] = {}  # ONNX tensor name -> rank
    dropped: set[str] = set()  # caffe blobs that only exist for PriorBox/DetectionOutput
    bn_of: dict[str, int] = {}  # ONNX tensor name -> index into b.nodes of the BN producing it

    b.names.add(data_name)
    cur[data_name] = data_name
    rank[data_name] = 4

    def use(blob: str) -> str:
        return cur[str(blob)]

    def define(blob: str, tensor: str, r: int) -> None:
        cur[str(blob)] = tensor
        rank[tensor] = r

    def consumers_after(idx: int, blob: str) -> int:
        """How many later layers read caffe blob ``blob`` before it is overwritten."""
        n = 0
        for l in layers[idx + 1:]:
            if blob in [str(x) for x in _getall(l, "bottom")]:
                n += 1
            if blob in [str(x) for x in _getall(l, "top")]:
                break
        return n

    for idx, l in enumerate(layers):
        ltype = str(_get(l, "type"))
        lname = str(_get(l, "name"))
        bottoms = [str(x) for x in _getall(l, "bottom")]
        tops = [str(x) for x in _getall(l, "top")]
        blobs = weights.get(lname, [])

        if ltype in ("Input",):
            continue
        if ltype in ("PriorBox", "DetectionOutput") or any(x in dropped for x in bottoms):
            # PriorBox depends only on shapes; drop it and everything that only consumes it.
            dropped.update(tops)
            continue
        top = tops[0]

        if ltype == "Convolution" or ltype == "Deconvolution":
            p = _get(l, "convolution_param", {})
            kh, kw = _pair(p, "kernel_size", "kernel_h", "kernel_w", 1)
            ph, pw = _pair(p, "pad", "pad_h", "pad_w", 0)
            sh, sw = _pair(p, "stride", "stride_h", "stride_w", 1)
            dh, dw = _pair(p, "dilation", "dilation_h", "dilation_w", 1)
            group = int(_get(p, "group", 1))
            bias_term = bool(_get(p, "bias_term", True))
            w = blobs[0].astype(np.float32)
            if w.ndim != 4:
                w = w.reshape(w.shape[0], -1, kh, kw) if ltype == "Convolution" else w.reshape(-1, w.shape[-3], kh, kw)
            ins = [use(bottoms[0]), b.const(lname + "_W", w)]
            if bias_term and len(blobs) > 1:
                ins.append(b.const(lname + "_B", blobs[1].reshape(-1).astype(np.float32)))
            attrs = dict(kernel_shape=[kh, kw], pads=[ph, pw, ph, pw], strides=[sh, sw],
                         dilations=[dh, dw], group=group)
            op = "Conv" if ltype == "Convolution" else "ConvTranspose"
            define(top, b.node(op, ins, top, lname, **attrs), 4)

        elif ltype == "BatchNorm":
            p = _get(l, "batch_norm_param", {})
            eps = float(_get(p, "eps", 1e-5))
            mean = blobs[0].reshape(-1).astype(np.float64)
            var = blobs[1].reshape(-1).astype(np.float64)
            sf = float(blobs[2].reshape(-1)[0]) if len(blobs) > 2 else 1.0
            f = 0.0 if sf == 0 else 1.0 / sf
            mean, var = mean * f, var * f
            c = mean.size
            # Fold into y = x * a + c form via ONNX BatchNormalization (scale=1, bias=0 for now;
            # a following Scale layer is merged into these constants).
            ins = [use(bottoms[0]),
                   b.const(lname + "_scale", np.ones(c, np.float32)),
                   b.const(lname + "_bias", np.zeros(c, np.float32)),
                   b.const(lname + "_mean", mean.astype(np.float32)),
                   b.const(lname + "_var", var.astype(np.float32))]
            out = b.node("BatchNormalization", ins, top, lname, epsilon=eps)
            define(top, out, rank[ins[0]])
            bn_of[out] = len(b.nodes) - 1

        elif ltype == "Scale":
            p = _get(l, "scale_param", {})
            axis = int(_get(p, "axis", 1))
            bias_term = bool(_get(p, "bias_term", False))
            if len(bottoms) > 1:
                raise NotImplementedError("Scale with two bottoms is not supported")
            x = use(bottoms[0])
            gamma = blobs[0].reshape(-1).astype(np.float32)
            beta = blobs[1].reshape(-1).astype(np.float32) if bias_term and len(blobs) > 1 else None
            prev_bn = bn_of.get(x)
            # merge into the preceding BatchNormalization when nothing else reads its output
            other_readers = any(x in n.input for n in b.nodes[prev_bn + 1:]) if prev_bn is not None else True
            if prev_bn is not None and axis == 1 and not other_readers and (
                    bottoms[0] in tops or consumers_after(idx, bottoms[0]) == 0):
                bn = b.nodes[prev_bn]
                inits = {t.name: t for t in b.inits}
                s_t, b_t = inits[bn.input[1]], inits[bn.input[2]]
                s_new = numpy_helper.to_array(s_t) * gamma
                b_new = numpy_helper.to_array(b_t) * gamma + (beta if beta is not None else 0.0)
                s_t.CopyFrom(numpy_helper.from_array(s_new.astype(np.float32), s_t.name))
                b_t.CopyFrom(numpy_helper.from_array(b_new.astype(np.float32), b_t.name))
                define(top, x, rank[x])
                continue
            r = rank[x]
            shp = [-1] + [1] * (r - axis - 1)
            y = b.node("Mul", [x, b.const(lname + "_gamma", gamma.reshape(shp))], top, lname + "_mul")
            if beta is not None:
                y = b.node("Add", [y, b.const(lname + "_beta", beta.reshape(shp))], top, lname + "_add")
            define(top, y, r)

        elif ltype == "ReLU":
            slope = float(_get(_get(l, "relu_param", {}), "negative_slope", 0.0))
            x = use(bottoms[0])
            if slope == 0.0:
                y = b.node("Relu", [x], top, lname)
            else:
                y = b.node("LeakyRelu", [x], top, lname, alpha=slope)
            define(top, y, rank[x])

        elif ltype == "Concat":
            p = _get(l, "concat_param", {})
            axis = int(_get(p, "axis", _get(p, "concat_dim", 1)))
            xs = [use(x) for x in bottoms]
            r = rank[xs[0]]
            define(top, b.node("Concat", xs, top, lname, axis=axis if axis >= 0 else axis + r), r)

        elif ltype == "Crop":
            p = _get(l, "crop_param", {})
            x, ref = use(bottoms[0]), use(bottoms[1])
            r = rank[x]
            axis = int(_get(p, "axis", 2))
            axis = axis + r if axis < 0 else axis
            offs = [int(v) for v in _getall(p, "offset")]
            axes = list(range(axis, r))
            if not offs:
                offs = [0] * len(axes)
            elif len(offs) == 1:
                offs = offs * len(axes)
            starts = np.array(offs, np.int64)
            ref_shape = b.node("Shape", [ref], lname + "_refshape", start=axis, end=r)
            ends = b.node("Add", [ref_shape, b.const(lname + "_offs", starts)], lname + "_ends")
            y = b.node("Slice", [x, b.const(lname + "_starts", starts), ends,
                                 b.const(lname + "_axes", np.array(axes, np.int64))], top, lname)
            define(top, y, r)

        elif ltype == "Eltwise":
            p = _get(l, "eltwise_param", {})
            op = str(_get(p, "operation", "SUM"))
            op = {"0": "PROD", "1": "SUM", "2": "MAX"}.get(op, op)
            coeffs = [float(c) for c in _getall(p, "coeff")]
            xs = [use(x) for x in bottoms]
            r = rank[xs[0]]
            if op == "SUM":
                if coeffs and any(c != 1.0 for c in coeffs):
                    xs = [x if c == 1.0 else b.node("Mul", [x, b.const(lname + "_coeff", np.array(c, np.float32))],
                                                      lname + "_scaled") for x, c in zip(xs, coeffs)]
                y = b.node("Sum", xs, top, lname)
            elif op == "PROD":
                y = b.node("Mul", xs[:2], top, lname) if len(xs) == 2 else None
                for extra in xs[2:]:
                    y = b.node("Mul", [y, extra], top, lname)
            elif op == "MAX":
                y = b.node("Max", xs, top, lname)
            else:
                raise NotImplementedError(f"Eltwise operation {op}")
            define(top, y, r)

        elif ltype == "Permute":
            x = use(bottoms[0])
            r = rank[x]
            order = [int(v) for v in _getall(_get(l, "permute_param", {}), "order")]
            order = order + [i for i in range(r) if i not in order]
            define(top, b.node("Transpose", [x], top, lname, perm=order), r)

        elif ltype == "Flatten":
            p = _get(l, "flatten_param", {})
            x = use(bottoms[0])
            r = rank[x]
            axis = int(_get(p, "axis", 1))
            end = int(_get(p, "end_axis", -1))
            axis = axis + r if axis < 0 else axis
            end = end + r if end < 0 else end
            if end == r - 1:
                shape = b.const(lname + "_shape", np.array([0] * axis + [-1], np.int64))
            else:
                tail = b.node("Shape", [x], lname + "_tail", start=end + 1, end=r)
                shape = b.node("Concat", [b.const(lname + "_head", np.array([0] * axis + [-1], np.int64)), tail],
                               lname + "_shape", axis=0)
            out_rank = axis + 1 + (r - 1 - end)
            define(top, b.node("Reshape", [x, shape], top, lname), out_rank)

        elif ltype == "Reshape":
            p = _get(l, "reshape_param", {})
            x = use(bottoms[0])
            r = rank[x]
            dims = [int(d) for d in _getall(_get(p, "shape", {}), "dim")]
            axis = int(_get(p, "axis", 0))
            num_axes = int(_get(p, "num_axes", -1))
            axis = axis + r + 1 if axis < 0 else axis
            end = r if num_axes == -1 else axis + num_axes
            if axis == 0 and end == r:  # ONNX Reshape's 0 (copy same index) == Caffe's 0
                shape = b.const(lname + "_shape", np.array(dims, np.int64))
            else:
                full = b.node("Shape", [x], lname + "_inshape")

                def dim_slice(a: int, z: int) -> str:
                    return b.node("Slice", [full, b.const(lname + "_s", np.array([a], np.int64)),
                                            b.const(lname + "_e", np.array([z], np.int64))], lname + "_dims")

                parts = [dim_slice(0, axis)] if axis > 0 else []
                for i, d in enumerate(dims):
                    parts.append(dim_slice(axis + i, axis + i + 1) if d == 0
                                 else b.const(lname + "_d", np.array([d], np.int64)))
                if end < r:
                    parts.append(dim_slice(end, r))
                shape = b.node("Concat", parts, lname + "_shape", axis=0)
            out_rank = axis + len(dims) + (r - end)
            define(top, b.node("Reshape", [x, shape], top, lname), out_rank)

        elif ltype == "Softmax":
            x = use(bottoms[0])
            r = rank[x]
            axis = int(_get(_get(l, "softmax_param", {}), "axis", 1))
            axis = axis + r if axis < 0 else axis
            define(top, b.node("Softmax", [x], top, lname, axis=axis), r)

        elif ltype in ("Dropout", "Split", "Silence"):
            for t in tops:
                define(t, use(bottoms[0]), rank[use(bottoms[0])])

        else:
            raise NotImplementedError(f"Caffe layer type {ltype!r} ({lname}) is not supported")

    # outputs: loc [N,P,4], conf [N,P,num_classes]
    loc_t = b.node("Reshape", [use(det_bottoms[0]), b.const("loc_shape", np.array([0, -1, 4], np.int64))],
                   "loc", "loc_reshape")
    conf_t = b.node("Reshape", [use(det_bottoms[1]),
                                b.const("conf_shape", np.array([0, -1, num_classes], np.int64))],
                    "conf", "conf_reshape")
    assert loc_t == "loc" and conf_t == "conf", (loc_t, conf_t)

    # prune nodes/initialisers not needed for the outputs
    needed = {"loc", "conf"}
    keep: list[onnx.NodeProto] = []
    for n in reversed(b.nodes):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
    keep.reverse()
    inits = [t for t in b.inits if t.name in needed]

    inp = helper.make_tensor_value_info(data_name, TensorProto.FLOAT, ["batch", 3, "height", "width"])
    outs = [helper.make_tensor_value_info("loc", TensorProto.FLOAT, ["batch", "priors", 4]),
            helper.make_tensor_value_info("conf", TensorProto.FLOAT, ["batch", "priors", num_classes])]
    graph = helper.make_graph(keep, str(_get(net, "name", "caffe_net")), [inp], outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="liveness.caffe_to_onnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------------------------
# parity check against OpenCV's own Caffe importer
# --------------------------------------------------------------------------------------------

MEAN_BGR = (104.0, 117.0, 123.0)


def preprocess_upstream(img: np.ndarray) -> np.ndarray:
    """Upstream Silent-Face Detection.get_bbox preprocessing -> NCHW float32 blob."""
    import cv2

    h, w = img.shape[:2]
    aspect = w / h
    if w * h >= 192 * 192:
        img = cv2.resize(img, (int(192 * math.sqrt(aspect)), int(192 / math.sqrt(aspect))),
                         interpolation=cv2.INTER_LINEAR)
    return cv2.dnn.blobFromImage(img, 1, mean=MEAN_BGR)


def _match_rows(a: np.ndarray, b: np.ndarray) -> float:
    """Max abs diff between two detection tables (row order of exact confidence ties may differ)."""
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    d = float(np.abs(a - b).max())
    if d <= 1e-4:
        return d
    # fall back to lexicographic order in case of swapped near-equal confidences
    ka = a[np.lexsort(a.T[::-1])]
    kb = b[np.lexsort(b.T[::-1])]
    return min(d, float(np.abs(ka - kb).max()))


def parity_check(model: onnx.ModelProto, prototxt: Path, caffemodel: Path,
                 images: list[np.ndarray]) -> dict[str, float]:
    """Compare ORT(model) with cv2.dnn.readNetFromCaffe on ``images`` (BGR uint8, any sizes).

    Returns max abs diffs: ``loc``, ``conf`` (raw tensors vs mbox_loc / mbox_conf_flatten),
    ``detections`` (OpenCV detection_out vs retinaface_post on ORT outputs) and
    ``batch_vs_single`` (a batch of 8 copies of the same-size blobs vs single runs).
    """
    import cv2
    import onnxruntime as ort

    from liveness.detection.retinaface_post import detect_from_outputs, retinaface_priors

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    cvnet = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cvnet.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    # Extra stress test of NMS/top_k: the same net with DetectionOutput's confidence_threshold
    # lowered to 0.001 (>1000 candidates: exercises top_k=400, NMS and keep_top_k).
    import tempfile

    low_thr = 0.001
    text = Path(prototxt).read_text()
    text_low, n_sub = re.subn(r"confidence_threshold:\s*[0-9.eE+-]+", f"confidence_threshold: {low_thr}", text)
    with tempfile.TemporaryDirectory() as td:
        low_path = Path(td) / "deploy_lowthr.prototxt"
        low_path.write_text(text_low)
        cvnet_low = cv2.dnn.readNetFromCaffe(str(low_path), str(caffemodel)) if n_sub == 1 else None

    def cv_rows(raw: np.ndarray) -> np.ndarray:
        # OpenCV pads detection_out to keep_top_k rows with all-zero rows
        r = raw.reshape(-1, 7)
        return r[np.any(r != 0, axis=1)]

    res = {"loc": 0.0, "conf": 0.0, "priors": 0.0, "detections": 0.0, "detections_thr0.001": 0.0,
           "batch_vs_single": 0.0, "num_detection_count_mismatches": 0.0}
    blobs = [preprocess_upstream(im) for im in images]
    for blob in blobs:
        loc, conf = sess.run(["loc", "conf"], {"data": blob})
        cvnet.setInput(blob)
        cv_loc, cv_conf, cv_det, cv_prior = cvnet.forward(
            ["mbox_loc", "mbox_conf_flatten", "detection_out", "mbox_priorbox"])
        res["loc"] = max(res["loc"], float(np.abs(loc.reshape(-1) - cv_loc.reshape(-1)).max()))
        res["conf"] = max(res["conf"], float(np.abs(conf.reshape(-1) - cv_conf.reshape(-1)).max()))
        h, w = blob.shape[2:]
        pri = retinaface_priors(h, w)
        res["priors"] = max(res["priors"], float(np.abs(pri.reshape(-1) - cv_prior[0, 0].reshape(-1)).max()))
        checks = [("detections", cv_det, 0.1)]
        if cvnet_low is not None:
            cvnet_low.setInput(blob)
            checks.append(("detections_thr0.001", cvnet_low.forward("detection_out"), low_thr))
        for key, raw, thr in checks:
            det = detect_from_outputs(loc[0], conf[0], pri, conf_threshold=thr)
            cvd = cv_rows(raw)
            if det.shape != cvd.shape:
                res["num_detection_count_mismatches"] += 1
            res[key] = max(res[key], _match_rows(det, cvd))
    if cvnet_low is None:
        res.pop("detections_thr0.001")

    # batch of 8 identical-size images vs single runs
    base = blobs[0]
    rng = np.random.default_rng(0)
    batch = [base] + [b for b in blobs[1:] if b.shape == base.shape]
    while len(batch) < 8:  # pad with jittered copies so samples differ
        batch.append(np.clip(base + rng.normal(0, 8, base.shape).astype(np.float32), -130, 155))
    batch = np.concatenate(batch[:8], axis=0)
    bl, bc = sess.run(["loc", "conf"], {"data": batch})
    for i in range(8):
        sl, sc = sess.run(["loc", "conf"], {"data": batch[i:i + 1]})
        res["batch_vs_single"] = max(res["batch_vs_single"], float(np.abs(bl[i] - sl[0]).max()),
                                     float(np.abs(bc[i] - sc[0]).max()))
    return res


if __name__ == "__main__":  # pragma: no cover
    import sys

    m = convert_caffe(Path(sys.argv[1]), Path(sys.argv[2]))
    onnx.save(m, sys.argv[3])
    print("saved", sys.argv[3])
