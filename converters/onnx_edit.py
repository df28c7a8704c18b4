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


def unpin_tflite_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove the batch-1 literals tflite2onnx bakes into a graph, so the batch can vary.

    Three patterns (MediaPipe face mesh / iris exports):
    * ``Expand(alpha, [1,C,H,W]) -> PRelu slope``: the slope ([1,C,1,1]) is used directly
      (PRelu broadcasts it over any batch);
    * ``Concat([x, ConstantOfShape([1,C,H,W])], axis=1)`` (channel zero padding): ``Pad(x)``
      with C zero channels after the existing ones, the same values for any batch;
    * ``Reshape(x, [1,-1])``: ``Flatten(x, axis=1)``.
    Anything else pinned to batch 1 is left alone; the batch-of-8 parity check catches it.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    const = lambda name: numpy_helper.to_array(inits[name]) if name in inits else None  # noqa: E731
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    producers = {o: n for n in g.node for o in n.output}
    drop: set[int] = set()
    replace: dict[int, onnx.NodeProto] = {}
    for n in g.node:
        if n.op_type == "Expand" and n.input[0] in inits and all(c.op_type == "PRelu" for c in consumers.get(n.output[0], [])):
            for c in consumers.get(n.output[0], []):
                c.input[1] = n.input[0]
            drop.add(id(n))
        elif n.op_type == "Concat" and len(n.input) == 2:
            axis = next((a.i for a in n.attribute if a.name == "axis"), None)
            pad = producers.get(n.input[1])
            shape = const(pad.input[0]) if pad is not None and pad.op_type == "ConstantOfShape" else None
            value = next((numpy_helper.to_array(a.t) for a in pad.attribute if a.name == "value"), np.zeros(1)) if shape is not None else None
            if axis == 1 and shape is not None and len(shape) == 4 and shape[0] == 1 and not np.any(value):
                pads_name = f"{n.output[0]}_pads"
                g.initializer.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 0, int(shape[1]), 0, 0], np.int64), pads_name))
                replace[id(n)] = helper.make_node("Pad", [n.input[0], pads_name], list(n.output), name=n.name or n.output[0], mode="constant")
                if len(consumers.get(pad.output[0], [])) == 1:
                    drop.add(id(pad))
        elif n.op_type == "Reshape" and const(n.input[1]) is not None and const(n.input[1]).tolist() == [1, -1]:
            replace[id(n)] = helper.make_node("Flatten", [n.input[0]], list(n.output), name=n.name, axis=1)
    nodes = [replace.get(id(n), n) for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(m)
    return m
