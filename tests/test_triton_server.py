"""A real Triton Inference Server (nvidia-pytriton's ``tritonserver``, Python backend + ONNX Runtime).

Needs ``.venv-triton`` (see the Makefile's triton target) and ``tritonclient`` in the main venv.
    python -m pytest -m triton -s tests/test_triton_server.py   # -s prints the timings
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from converters.triton_python import write_python_backend_repository
from liveness.antispoof.crop import crop_face
from liveness.detection.retinaface import RetinaFace
from liveness.inference import pbtxt
from liveness.inference.repository import load_repository
from tests.triton_helpers import TRITON_MARKS, http, httpclient, running_triton  # noqa: F401  (http: a fixture)

pytestmark = TRITON_MARKS
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc,http] not installed in this venv")

ATOL = 1e-4


@pytest.fixture(scope="module")
def python_repository(model_repository, tmp_path_factory):
    dst = tmp_path_factory.mktemp("triton") / "model_repository"
    write_python_backend_repository(model_repository, dst)
    return dst


@pytest.fixture(scope="module")
def server(python_repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("triton-log") / "tritonserver.log"
    with running_triton(python_repository, log, load=["minifasnet_v2", "retinaface"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def grpc(server):
    with closing(grpcclient.InferenceServerClient(server.grpc_url)) as client:
        yield client


@pytest.fixture(scope="module")
def crops(media, model_repository):
    """Real 80x80 MiniFASNetV2 crops: RetinaFace (in-process) boxes on the dev images, a few scales."""
    det = RetinaFace()
    sess = ort.InferenceSession(str(model_repository / "retinaface/1/model.onnx"), providers=["CPUExecutionProvider"])
    out = []
    for name in ("T1", "F1", "F2"):
        img = cv2.imread(str(media / "images" / f"silentface_image_{name}.jpg"))
        x, meta = det.preprocess(img)
        face = det.postprocess(sess.run(None, {"data": x}), meta)[0]
        for scale in (2.7, 2.4, 3.0):
            out.append(crop_face(img, face.bbox, scale, 80).transpose(2, 0, 1).astype(np.float32))
    return np.stack(out)


def reference(model_repository, model: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    # The version Triton serves by itself: config.pbtxt's version_policy is latest {num_versions: 1}
    # (minifasnet_*/2 is the INT8 build; our service picks versions itself).
    version = load_repository(model_repository)[model].latest
    sess = ort.InferenceSession(str(model_repository / model / str(version) / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def infer(client, module, model: str, x: np.ndarray, name: str, outputs: list[str]) -> list[np.ndarray]:
    inp = module.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = client.infer(model, [inp], outputs=[module.InferRequestedOutput(o) for o in outputs])
    return [res.as_numpy(o) for o in outputs]


def stats(http_client, model: str) -> tuple[int, int]:
    stats = http_client.get_inference_statistics(model)["model_stats"]  # GET /v2/models/<model>/stats
    # One entry per version: summed, whichever version the requests went to (the latest one).
    return sum(int(s.get("inference_count", 0)) for s in stats), sum(int(s.get("execution_count", 0)) for s in stats)


def test_generated_configs_differ_only_in_backend(model_repository, python_repository):
    for src in sorted(model_repository.glob("*/config.pbtxt")):
        a = pbtxt.loads(src.read_text())
        b = pbtxt.loads((python_repository / src.parent.name / "config.pbtxt").read_text())
        assert a.pop("platform") == ["onnxruntime_onnx"] and b.pop("backend") == ["python"]
        assert a == b
        assert (python_repository / src.parent.name / "1" / "model.py").is_file()


def test_server_lists_the_repository(http, python_repository):
    index = {m["name"]: m.get("state") for m in http.get_model_repository_index()}
    assert set(index) == {p.name for p in python_repository.iterdir()}
    assert index["minifasnet_v2"] == "READY" and index["minifasnet_v1se"] != "READY"
    meta = http.get_model_metadata("minifasnet_v2")
    assert meta["inputs"][0]["shape"] == [-1, 3, 80, 80] and meta["outputs"][0]["shape"] == [-1, 3]


def test_minifasnet_v2_batch_matches_onnxruntime(http, grpc, crops, model_repository):
    want = reference(model_repository, "minifasnet_v2", {"input": crops})[0]
    for client, module in ((http, httpclient), (grpc, grpcclient)):
        got = infer(client, module, "minifasnet_v2", crops, "input", ["output"])[0]
        diff = float(np.abs(got - want).max())
        print(f"\nminifasnet_v2 batch {crops.shape} via {module.__name__}: max |diff| {diff:.2e}")
        assert got.shape == want.shape and diff <= ATOL

    latencies = []
    for _ in range(30):
        t0 = time.perf_counter()
        infer(grpc, grpcclient, "minifasnet_v2", crops[:1], "input", ["output"])
        latencies.append(time.perf_counter() - t0)
    print(f"one-crop latency (grpc): median {statistics.median(latencies) * 1e3:.2f} ms, min {min(latencies) * 1e3:.2f} ms")


def test_retinaface_variable_size_matches_onnxruntime(grpc, media, model_repository):
    img = cv2.imread(str(media / "images" / "silentface_image_T1.jpg"))
    x, _ = RetinaFace().preprocess(img)
    want = reference(model_repository, "retinaface", {"data": x})
    got = infer(grpc, grpcclient, "retinaface", x, "data", ["loc", "conf"])
    for g, w in zip(got, want):
        assert g.shape == w.shape and float(np.abs(g - w).max()) <= ATOL


def test_dynamic_batcher_batches_concurrent_requests(http, grpc, crops):
    """Whether requests overlap in Triton's queue depends on scheduling (a busy machine can spread
    16 "concurrent" requests out): a few bursts, and one that shares an execution is the proof."""
    n = 16
    seen = []
    for _ in range(5):
        inf0, exe0 = stats(http, "minifasnet_v2")
        gate = threading.Barrier(n)

        def one(i: int) -> np.ndarray:
            gate.wait()
            return infer(grpc, grpcclient, "minifasnet_v2", crops[i % len(crops)][None], "input", ["output"])[0]

        with ThreadPoolExecutor(n) as pool:
            outs = list(pool.map(one, range(n)))
        inf1, exe1 = stats(http, "minifasnet_v2")
        print(f"\n{n} concurrent requests: inference_count +{inf1 - inf0}, execution_count +{exe1 - exe0}")
        assert all(o.shape == (1, 3) for o in outs)
        assert inf1 - inf0 == n
        seen.append(exe1 - exe0)
        if exe1 - exe0 < n:  # several requests shared one model execution
            return
    pytest.fail(f"Triton never batched {n} concurrent requests: executions per burst {seen}")


def test_explicit_load_and_unload(http, grpc, crops):
    model = "minifasnet_v1se"
    assert not http.is_model_ready(model)
    t0 = time.perf_counter()
    http.load_model(model)  # POST /v2/repository/models/minifasnet_v1se/load
    print(f"\nload {model}: {time.perf_counter() - t0:.2f}s")
    assert http.is_model_ready(model)
    out = infer(grpc, grpcclient, model, crops[:2], "input", ["output"])[0]
    assert out.shape == (2, 3)
    http.unload_model(model, unload_dependents=False)  # POST .../unload
    deadline = time.monotonic() + 30
    while http.is_model_ready(model) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not http.is_model_ready(model)
    assert http.is_model_ready("minifasnet_v2")
