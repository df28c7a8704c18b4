"""Small graph edits the converters share."""

from __future__ import annotations

import onnx
import onnxruntime as ort


def make_batch_dynamic(model: onnx.ModelProto, name: str = "batch") -> onnx.ModelProto:
    """Turn a fixed leading dim of 1 into a symbolic one on every graph input and output.

    Only valid for graphs whose ops are batch-agnostic (no Reshape to a literal 1); callers prove
    it with the batch-of-8 parity check rather than trusting this edit.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        dim0 = vi.type.tensor_type.shape.dim[0]
        dim0.Clear()
        dim0.dim_param = name
    # Stale intermediate shapes would pin batch 1 again.
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    return m


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def rewrite_prelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every PRelu by an exact equivalent that ONNX Runtime runs ~2x faster on CPU.

    ORT's PRelu kernel with per-channel slopes is a slow generic broadcast and blocks its
    NCHWc conv fusions: it took 53% of MiniFASNet's time (profiled).  For slope <= 1,
    PRelu(x) = Max(x, slope * x) exactly (x > 0: slope*x <= x; x < 0: slope*x >= x), in any
    sign of slope; otherwise Relu(x) + slope * Min(x, 0), also exact.  Parity checks prove it.
    """
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    zero = "prelu_rewrite_zero"
    nodes = []
    need_zero = False
    for i, n in enumerate(g.node):
        if n.op_type != "PRelu":
            nodes.append(n)
            continue
        x, slope = n.input
        y, p = n.output[0], f"{n.name or 'prelu'}_{i}"
        s = numpy_helper.to_array(inits[slope]) if slope in inits else None
        if s is not None and float(s.max()) <= 1.0:
            nodes += [helper.make_node("Mul", [x, slope], [p + "_sx"]), helper.make_node("Max", [x, p + "_sx"], [y])]
        else:
            need_zero = True
            nodes += [
                helper.make_node("Relu", [x], [p + "_pos"]),
                helper.make_node("Min", [x, zero], [p + "_neg"]),
                helper.make_node("Mul", [p + "_neg", slope], [p + "_sneg"]),
                helper.make_node("Add", [p + "_pos", p + "_sneg"], [y]),
            ]
    if need_zero:
        import numpy as np

        g.initializer.append(numpy_helper.from_array(np.array(0, np.float32), zero))
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    return m
