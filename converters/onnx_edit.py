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
