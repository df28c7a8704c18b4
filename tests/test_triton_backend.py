"""``TritonBackend`` against a real tritonserver (explicit model control): versioned loads through
config overrides, unloads that keep the other versions, failures as ``model_unavailable``.

    python -m pytest -m triton tests/test_triton_backend.py
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time

import numpy as np
import onnxruntime as ort
import pytest

from converters.triton_python import write_python_backend_repository
from liveness.errors import MODEL_UNAVAILABLE, LivenessError
from liveness.inference.repository import file_sha256
from liveness.ports import free_port
from liveness.settings import Settings
from tests.triton_helpers import TRITON_MARKS, http, httpclient, running_triton  # noqa: F401  (http: a fixture)

pytestmark = TRITON_MARKS
triton = pytest.importorskip("liveness.inference.triton")

MODEL = "minifasnet_v2"


@pytest.fixture(scope="module")
def repo(model_repository, tmp_path_factory):
    """The Python-backend twin, with a version 2 of minifasnet_v2 (v1's weights if the repo has none)."""
    dst = tmp_path_factory.mktemp("triton-backend") / "repository"
    write_python_backend_repository(model_repository, dst)
    broken = dst / "broken"  # another tenant's model that fails to load
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [{name: "x" data_type: TYPE_FP32 dims: [1]}]\noutput [{name: "y" data_type: TYPE_FP32 dims: [1]}]\n')
    (broken / "1" / "model.py").write_text("raise RuntimeError('broken on purpose')\n")
    v1, v2 = dst / MODEL / "1", dst / MODEL / "2"
    if not (v2 / "model.onnx").is_file():
        v2.mkdir(exist_ok=True)
        os.link(v1 / "model.onnx", v2 / "model.onnx")
        shutil.copy2(v1 / "model.py", v2 / "model.py")
    return dst


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    with running_triton(repo, tmp_path_factory.mktemp("log") / "triton.log") as srv:
        yield srv


def backend(repo, url: str, protocol: str = "grpc", timeout: float = 5.0):
    return triton.TritonBackend(Settings(backend="triton", model_repository=repo, triton_url=url,
                                         triton_protocol=protocol, triton_timeout_s=timeout))


def ready_versions(http, model: str) -> set[int]:
    return {int(m["version"]) for m in http.get_model_repository_index()
            if m["name"] == model and m.get("version") and m.get("state") == "READY"}


def test_config_json_is_the_pbtxt_with_a_specific_version_policy(repo):
    cfg = json.loads(triton.config_json((repo / MODEL / "config.pbtxt").read_text(), [2, 1]))
    assert cfg["name"] == MODEL and cfg["backend"] == "python" and cfg["max_batch_size"] == 32
    assert cfg["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 80, 80]}]
    assert cfg["output"] == [{"name": "output", "data_type": "TYPE_FP32", "dims": [3]}]
    assert cfg["version_policy"] == {"specific": {"versions": [1, 2]}}
    assert cfg["parameters"]["crop_scale"] == {"string_value": "2.7"}
    assert cfg["instance_group"] == [{"kind": "KIND_CPU", "count": 1}]


def test_versions_load_side_by_side_and_unload_separately(repo, server, http):
    b = backend(repo, server.grpc_url)
    info = b.load_sync(MODEL, 1)
    assert info.sha256 == file_sha256(repo / MODEL / "1" / "model.onnx")
    assert ready_versions(http, MODEL) == {1}
    b.mark_ready()
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 80, 80)).astype(np.float32)
    want = {v: ort.InferenceSession(str(repo / MODEL / str(v) / "model.onnx"), providers=["CPUExecutionProvider"])
            .run(None, {"input": x})[0] for v in (1, 2)}

    async def scenario():
        try:
            await b.load(MODEL, 2)  # must not unload version 1
            assert ready_versions(http, MODEL) == {1, 2}
            assert b.loaded_versions(MODEL) == [1, 2]
            for v in (1, 2):
                got = (await b.infer(MODEL, x, v))[0]
                assert got.shape == (2, 3) and float(np.abs(got - want[v]).max()) <= 1e-3
            assert b.ready
            await b.unload(MODEL, 2)
            deadline = time.monotonic() + 30
            while ready_versions(http, MODEL) != {1} and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert ready_versions(http, MODEL) == {1}
            assert b.loaded_versions(MODEL) == [1]
            with pytest.raises(LivenessError) as exc:
                await b.infer(MODEL, x, 2)
            assert exc.value.kind is MODEL_UNAVAILABLE and exc.value.details["backend"] == "triton"
            await b.unload(MODEL, 1)
            while ready_versions(http, MODEL) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert ready_versions(http, MODEL) == set()
        finally:
            b.close()

    asyncio.run(scenario())


def test_unreachable_server_is_model_unavailable_quickly(repo, server):
    b = backend(repo, server.grpc_url, timeout=1.0)
    b.load_sync("minifasnet_v1se", 1)
    b.mark_ready()
    b.url = f"127.0.0.1:{free_port()}"  # nothing listens there
    x = np.zeros((1, 3, 80, 80), np.float32)

    async def scenario():
        try:
            t0 = time.perf_counter()
            with pytest.raises(LivenessError) as exc:
                await b.infer("minifasnet_v1se", x, 1)
            assert time.perf_counter() - t0 < 2.0
            assert exc.value.kind is MODEL_UNAVAILABLE
            assert exc.value.details == {"retry_after": 1, "backend": "triton"}
            assert not b.ready
        finally:
            b.close()

    asyncio.run(scenario())


def test_to_load_waits_for_another_clients_load_and_keeps_what_serves():
    to_load = triton._to_load
    assert to_load("m", {1}, [("m", 1, "READY")]) is None
    assert to_load("m", {1}, []) == {1}
    assert to_load("m", {2}, [("m", 1, "READY"), ("x", 2, "READY")]) == {1, 2}
    assert to_load("m", {1}, [("m", 1, "LOADING")]) == set()
    assert to_load("m", {2}, [("m", 1, "UNLOADING")]) == set()
    assert to_load("m", {1}, [("m", 1, "UNAVAILABLE")]) == {1}


def test_workers_loading_the_same_models_at_once_all_succeed(repo, server, http):
    """Every worker of every replica loads its models itself, at start-up and after a Triton restart."""
    from concurrent.futures import ThreadPoolExecutor

    models = ["retinaface", "yunet"]
    workers = [backend(repo, server.grpc_url) for _ in range(3)]
    with ThreadPoolExecutor(len(workers) * len(models)) as pool:
        done = [pool.submit(w.load_sync, m, 1) for w in workers for m in models]
        infos = [f.result() for f in done]  # raises what a worker would have crashed on
    assert {(i.name, i.version) for i in infos} == {(m, 1) for m in models}
    for m in models:
        assert ready_versions(http, m) == {1}

    async def reload_together():
        for m in models:
            http.unload_model(m)
        deadline = time.monotonic() + 30
        while any(ready_versions(http, m) for m in models) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.gather(*(w._apply(m, {1}) for w in workers for m in models))
        for m in models:
            await workers[0]._wait_ready(m, 1)

    try:
        asyncio.run(reload_together())
        for m in models:
            assert ready_versions(http, m) == {1}
    finally:
        for m in models:
            http.unload_model(m)


def test_not_ready_until_every_lost_version_is_back(repo, server, http):
    """After Triton loses a model (a restart), one model answering must not make the worker ready."""
    b = backend(repo, server.grpc_url)
    b.load_sync("minifasnet_v1se", 1)
    b.load_sync("iris", 1)
    b.mark_ready()
    x = np.zeros((1, 3, 80, 80), np.float32)

    async def scenario():
        try:
            await b.infer("minifasnet_v1se", x, 1)
            assert b.ready
            http.unload_model("iris")
            deadline = time.monotonic() + 60
            while b.ready and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not b.ready, "the probe never noticed iris was gone"
            samples = []
            while time.monotonic() < deadline:
                await b.infer("minifasnet_v1se", x, 1)  # the other model keeps answering
                ready = b.ready
                samples.append((ready, 1 in ready_versions(http, "iris")))
                if ready:
                    break
                await asyncio.sleep(0.02)
            assert samples and samples[-1] == (True, True), samples[-5:]
            assert all(iris for ready, iris in samples if ready)
        finally:
            b.close()
            http.unload_model("iris")

    asyncio.run(scenario())


def test_a_broken_model_of_someone_else_does_not_stop_us(repo, server, http):
    """A shared Triton with one model that failed to load says "not ready" (strict readiness);
    our workers must still start and report ready on their own models."""
    with pytest.raises(Exception):
        http.load_model("broken")
    assert http.is_server_live() and not http.is_server_ready()
    b = backend(repo, server.grpc_url)
    x = np.zeros((1, 3, 80, 80), np.float32)

    async def scenario():
        try:
            await b.infer("minifasnet_v1se", x, 1)
            deadline = time.monotonic() + 60  # polled: only a hung probe reaches it
            await asyncio.sleep(0.2)  # the probe's first round
            while not b.ready and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert b.ready
        finally:
            b.close()

    try:
        b.load_sync("minifasnet_v1se", 1)  # used to wait 60 s for server readiness, then fail
        b.mark_ready()
        asyncio.run(scenario())
    finally:
        http.unload_model("broken")
        http.unload_model("minifasnet_v1se")
