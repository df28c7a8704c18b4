"""INT8 variants of a float32 model, made with ONNX Runtime's quantization tools, and the
measurements that decide whether one may be written: output deviation on real inputs and speed.

Method (measured on MiniFASNet, 2-core AVX512-VNNI EPYC, ORT 1.32; see the variant's QUANTIZATION.md):
static quantization, QDQ format, per-channel int8 weights, uint8 activations (U8S8, the fast path
on x86: int8 activations ran 1.9x *slower* than float32), MinMax calibration on real face crops.
``quantize_dynamic`` was tried and rejected: ConvInteger is 3.6x slower than float32 and moved
p(live) by up to 0.99; dynamic on the final MatMul only is exact but no faster.
"""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort


@contextmanager
def _quiet():
    # The quantizer logs advice ("consider pre-processing", "axis out of range for bn.weight")
    # through the root logger; the build prints its own progress.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def int8_static(
    calibration: Callable[[Path], np.ndarray],
    input_name: str = "input",
    activation_type: str = "QUInt8",
    method: str = "MinMax",
) -> Callable[[onnx.ModelProto, Path], onnx.ModelProto]:
    """A ``VariantSpec.transform``: static QDQ INT8, per-channel weights, calibrated one sample
    at a time on ``calibration(sources)`` (an NCHW batch of real inputs).  Deterministic: MinMax
    over a fixed, ordered set gives the same ranges, hence the same bytes, on every build."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, x: np.ndarray) -> None:
            self._it = iter([{input_name: x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self._it, None)

    def transform(model: onnx.ModelProto, sources: Path) -> onnx.ModelProto:
        data = calibration(sources)
        # quantize_static mishandles an in-memory ModelProto (external-data temp files); use files.
        with tempfile.TemporaryDirectory(prefix="liveness-quant-") as tmp, _quiet():
            fp32, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
            onnx.save(model, str(fp32))
            # Symbolic shape inference needs sympy (not a dependency); ONNX shape inference suffices here.
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(out),
                Reader(data),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=getattr(QuantType, activation_type),
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, method),
            )
            q = onnx.load(str(out))
        q.doc_string = f"INT8 static QDQ (per-channel QInt8 weights, {activation_type} activations, {method}) of version 1"
        onnx.checker.check_model(q)
        return q

    transform.method = (  # type: ignore[attr-defined]
        f"onnxruntime.quantization.quantize_static, QDQ, per-channel QInt8 weights, {activation_type} activations, "
        f"{method} calibration (after quant_pre_process)"
    )
    return transform


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ms_per_call(sess: ort.InferenceSession, feed: dict[str, np.ndarray], calls: int) -> float:
    """Median wall time of one ``run`` in ms, after a warm-up."""
    for _ in range(max(5, calls // 10)):
        sess.run(None, feed)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def p_class(sess: ort.InferenceSession, x: np.ndarray, cls: int, input_name: str = "input") -> np.ndarray:
    z = sess.run(None, {input_name: x})[0].astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True))[:, cls]


def compare_classifier(
    base: onnx.ModelProto,
    variant: onnx.ModelProto,
    crop_sets: dict[str, np.ndarray],
    verdict_crops: dict[str, tuple[np.ndarray, bool]],
    cls: int,
    mean_tolerance: float,
    threshold: float = 0.5,
    input_name: str = "input",
) -> dict:
    """Deviation of p(cls) between ``base`` and ``variant`` on every crop set, verdicts on named
    crops (must not change), and speed at batch 1 and 8 (median, one intra-op thread)."""
    s0, s1 = _session(base), _session(variant)
    failures: list[str] = []
    per_set, all_dev, flips = {}, [], {}
    for name, x in crop_sets.items():
        p0, p1 = p_class(s0, x, cls, input_name), p_class(s1, x, cls, input_name)
        dev = np.abs(p1 - p0)
        all_dev.append(dev)
        per_set[name] = {"n": int(len(x)), "max": round(float(dev.max()), 4), "mean": round(float(dev.mean()), 4)}
        flips[name] = int(((p0 > threshold) != (p1 > threshold)).sum())
    dev = np.concatenate(all_dev)
    verdicts = {}
    for name, (x, live) in verdict_crops.items():
        p0, p1 = float(p_class(s0, x[None], cls, input_name)[0]), float(p_class(s1, x[None], cls, input_name)[0])
        verdicts[name] = {"expected_live": live, "fp32": round(p0, 4), "int8": round(p1, 4)}
        if (p1 > threshold) != live or (p0 > threshold) != live:
            failures.append(f"{name}: verdict changed or wrong (fp32 {p0:.3f}, int8 {p1:.3f}, expected live={live})")
    if float(dev.mean()) > mean_tolerance:
        failures.append(f"mean |dp| {dev.mean():.4f} exceeds {mean_tolerance}")
    x = next(iter(crop_sets.values()))
    speed = {}
    for tag, s in (("fp32", s0), ("int8", s1)):
        speed[tag] = {
            "batch1_ms": round(ms_per_call(s, {input_name: x[:1]}, 300), 3),
            "batch8_ms": round(ms_per_call(s, {input_name: np.resize(x, (8, *x.shape[1:]))}, 60), 3),
        }
    return {
        "max_abs_dev": round(float(dev.max()), 4),
        "mean_abs_dev": round(float(dev.mean()), 4),
        "p95_abs_dev": round(float(np.percentile(dev, 95)), 4),
        "n_crops": int(len(dev)),
        "deviation_by_set": per_set,
        "threshold_flips_by_set": flips,
        "verdicts": verdicts,
        "speed_ms": speed,
        "speedup": {
            b: round(speed["fp32"][f"{b}_ms"] / speed["int8"][f"{b}_ms"], 2) for b in ("batch1", "batch8")
        },
        "cpu": _cpu(),
        "onnxruntime": ort.__version__,
        "failures": failures,
    }


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def quantization_md(model: str, report: dict, tolerance: float, mean_tolerance: float, method: str, calibration: str, measured: str) -> str:
    """QUANTIZATION.md, written next to the INT8 model."""
    r = report
    evaluated = ", ".join(f"{k} ({v['n']})" for k, v in r["deviation_by_set"].items())
    lines = [
        f"# {model} version 2: INT8",
        "",
        "Made by `python -m converters.build` from version 1 (float32); measured at build time on real face crops.",
        "",
        f"* Method: {method}.",
        f"* Calibration set: {calibration}.",
        f"* Evaluated on: {evaluated} crops.",
        f"* Accepted if max |p(live) int8 - p(live) fp32| <= {tolerance}, mean <= {mean_tolerance}, "
        "and the T1 (live) / F1, F2 (spoof) verdicts at 0.5 are unchanged.",
        "",
        "## Deviation of p(live) (class 1)",
        "",
        "| crop set | n | max | mean | verdict flips at 0.5 |",
        "|---|---|---|---|---|",
    ]
    for k, v in r["deviation_by_set"].items():
        lines.append(f"| {k} | {v['n']} | {v['max']:.4f} | {v['mean']:.4f} | {r['threshold_flips_by_set'][k]} |")
    lines += [
        f"| **all** | {r['n_crops']} | **{r['max_abs_dev']:.4f}** | **{r['mean_abs_dev']:.4f}** (p95 {r['p95_abs_dev']:.4f}) | |",
        "",
        "## Dev images (upstream RetinaFace crops, this model alone)",
        "",
        "| image | expected | p(live) fp32 | p(live) int8 |",
        "|---|---|---|---|",
    ]
    for k, v in r["verdicts"].items():
        lines.append(f"| {k} | {'live' if v['expected_live'] else 'spoof'} | {v['fp32']:.4f} | {v['int8']:.4f} |")
    s = r["speed_ms"]
    lines += [
        "",
        f"## Speed (ORT {r['onnxruntime']} CPU, 1 intra-op thread, median ms per call; {r['cpu']})",
        "",
        "| | batch 1 | batch 8 |",
        "|---|---|---|",
        f"| fp32 (version 1) | {s['fp32']['batch1_ms']:.3f} | {s['fp32']['batch8_ms']:.3f} |",
        f"| int8 (version 2) | {s['int8']['batch1_ms']:.3f} | {s['int8']['batch8_ms']:.3f} |",
        f"| speed-up | {r['speedup']['batch1']:.2f}x | {r['speedup']['batch8']:.2f}x |",
        "",
        measured,
        "",
    ]
    return "\n".join(lines)
