"""Triton ``config.pbtxt`` for a ModelSpec."""

from __future__ import annotations

from converters.spec import ModelSpec
from liveness.inference.pbtxt import Enum, dumps


def config_for(spec: ModelSpec, backend: str = "onnxruntime") -> str:
    cfg: dict = {"name": spec.name}
    if backend == "onnxruntime":
        cfg["platform"] = "onnxruntime_onnx"
    else:  # Triton's Python backend wrapping ONNX Runtime (for the pytriton server in tests)
        cfg["backend"] = backend
    cfg["max_batch_size"] = spec.max_batch_size
    cfg["input"] = [{"name": t.name, "data_type": Enum(t.dtype), "dims": list(t.dims)} for t in spec.inputs]
    cfg["output"] = [{"name": t.name, "data_type": Enum(t.dtype), "dims": list(t.dims)} for t in spec.outputs]
    batching: dict = {}
    if spec.preferred_batch_sizes:
        batching["preferred_batch_size"] = list(spec.preferred_batch_sizes)
    batching["max_queue_delay_microseconds"] = spec.max_queue_delay_us
    cfg["dynamic_batching"] = batching
    # Every version on disk is served; which one answers a request is the client's choice (our
    # service names a version in every call, per its rollout policy), so canary and shadow work
    # on a plain Triton too.  A request without a version gets the highest one.
    cfg["version_policy"] = {"all": {}} if spec.variants else {"latest": {"num_versions": 1}}
    cfg["instance_group"] = [{"kind": Enum("KIND_CPU"), "count": 1}]
    params = {"role": spec.role, "licence": spec.licence, "upstream": spec.upstream, **spec.parameters}
    if spec.variants:
        # Triton serves the latest version (policy above); our service picks versions itself
        # (model_policy.toml) and reads what each one is from here.
        versions = [(spec.version, "float32 export")] + [(v.version, v.description) for v in spec.variants]
        params["versions"] = "; ".join(f"{v}: {d}" for v, d in versions)
    cfg["parameters"] = [{"key": k, "value": {"string_value": v}} for k, v in params.items()]
    return dumps(cfg) + "\n"
