"""Remote inference on a Triton Inference Server (``LIVENESS_BACKEND=triton``).

Triton runs with ``--model-control-mode=explicit``; this backend loads what the service needs
through Triton's repository API and sends one request per call (Triton's dynamic batcher
batches: nothing is batched in front of it).

* Configs and versions are read from the LOCAL ``settings.model_repository``, which must be the
  repository Triton serves (or a copy of it: same ``config.pbtxt`` files, same ``model.onnx``).
* A load sends ``config.pbtxt`` as a JSON override whose ``version_policy`` is ``specific`` with
  every version wanted for that model (ours plus whatever is READY on Triton already, e.g. loaded
  by another worker), so loading version 2 never unloads version 1.
* Every failure to get an answer (refused, timed out, model not ready) is a ``model_unavailable``
  503 with ``details.retry_after``.  ``ready`` goes False while Triton is unreachable; a probe
  task (every second, started in the serving loop) turns it back True, re-loading the wanted
  versions first if Triton came back without them (a restarted server in explicit mode).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from liveness.errors import MODEL_UNAVAILABLE, LivenessError
from liveness.inference import pbtxt
from liveness.inference.repository import LocalRepository, ModelConfig, ModelVersion, file_sha256
from liveness.settings import Settings

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0
LOAD_TIMEOUT_S = 120.0  # a Python-backend model starts a stub process: seconds, not ms
STARTUP_WAIT_S = 60.0  # load_sync waits this long for Triton to come up

# model_config.proto fields that are repeated (a list in JSON even with one value).
_REPEATED = {
    "input", "output", "dims", "instance_group", "preferred_batch_size", "shape", "gpus", "versions",
    "batch_input", "batch_output", "model_warmup", "profile", "source_input", "priority_levels",
}


def config_json(text: str, versions: list[int]) -> str:
    """``config.pbtxt`` text -> Triton's JSON model config, ``version_policy: specific {versions}``."""

    def convert(msg: dict[str, list[Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, vals in msg.items():
            if key == "parameters":  # map<string, ModelParameter>
                out[key] = {pbtxt.first(p, "key"): convert(pbtxt.first(p, "value", {})) for p in vals}
                continue
            vals = [convert(v) if isinstance(v, dict) else v for v in vals]
            out[key] = vals if key in _REPEATED or len(vals) > 1 else vals[0]
        return out

    cfg = convert(pbtxt.loads(text))
    cfg["version_policy"] = {"specific": {"versions": sorted(versions)}}
    return json.dumps(cfg)


def _unavailable(message: str, retry_after: int = 1) -> LivenessError:
    return LivenessError(MODEL_UNAVAILABLE, message, details={"retry_after": retry_after, "backend": "triton"})


def _index_states(index: Any) -> list[tuple[str, int, str]]:
    """(model, version, state) from either client's repository index (grpc: {"models": [...]})."""
    items = index.get("models", []) if isinstance(index, dict) else index
    out = []
    for m in items or []:
        if m.get("version"):
            out.append((m["name"], int(m["version"]), m.get("state", "")))
    return out


def _ready_on_server(model: str, states: list[tuple[str, int, str]]) -> set[int]:
    return {v for m, v, s in states if m == model and s == "READY"}


def _to_load(model: str, wanted: set[int], states: list[tuple[str, int, str]]) -> set[int] | None:
    """The version set to ask Triton for: ``None`` when ``wanted`` is all READY, empty while another
    client (every worker of every replica loads for itself) is loading the model, since a second load
    would wait for it and then reload it.  READY versions stay in the set: a load replaces the
    version policy, and what serves may be another worker's."""
    ready = _ready_on_server(model, states)
    if wanted <= ready:
        return None
    loading = {v for m, v, s in states if m == model and s in ("LOADING", "UNLOADING")}
    if loading:
        return set()
    return wanted | ready


class TritonBackend:
    name = "triton"

    def __init__(self, settings: Settings) -> None:
        self.repository = settings.model_repository
        self.url = settings.triton_url
        self.protocol = settings.triton_protocol
        self.timeout = float(settings.triton_timeout_s)
        self.local = LocalRepository(self.repository)
        self._wanted: dict[str, set[int]] = {}  # versions this service needs, per model
        self._info: dict[tuple[str, int], ModelVersion] = {}  # loaded and warmed
        self._started = False  # mark_ready() after the start-up loads
        self._reachable = True
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None  # the async client, bound to self._loop
        self._control_client: Any = None  # HTTP only: loads take longer than an inference may
        self._probe_task: asyncio.Task | None = None
        self._kick: asyncio.Event | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    # -- local repository ----------------------------------------------------------------------

    def config(self, model: str) -> ModelConfig:
        return self.local.config(model)

    def available_versions(self, model: str) -> list[int]:
        return self.local.available_versions(model)

    def _override(self, model: str, versions: set[int]) -> str:
        return config_json((self.repository / model / "config.pbtxt").read_text(), sorted(versions))

    def _warm_input(self, model: str) -> np.ndarray:
        cfg = self.config(model)
        dims = [d if d > 0 else 64 for d in cfg.inputs[0].dims]
        return np.zeros([1, *dims], np.float32)

    # -- clients -------------------------------------------------------------------------------

    def _sync_module(self):
        if self.protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        return module

    def _aio_module(self):
        if self.protocol == "http":
            import tritonclient.http.aio as module
        else:
            import tritonclient.grpc.aio as module
        return module

    def _sync_client(self):
        """A fresh client per call: the sync HTTP client is not thread-safe."""
        module = self._sync_module()
        if self.protocol == "http":
            return module.InferenceServerClient(self.url, connection_timeout=self.timeout, network_timeout=LOAD_TIMEOUT_S)
        return module.InferenceServerClient(self.url)

    def _aio(self, control: bool = False):
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            module = self._aio_module()
            if self.protocol == "http":
                # conn_timeout is aiohttp's total timeout of every call made with this client.
                self._client = module.InferenceServerClient(self.url, conn_timeout=self.timeout)
                self._control_client = module.InferenceServerClient(self.url, conn_timeout=LOAD_TIMEOUT_S)
            else:
                from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

                self._client = module.InferenceServerClient(self.url, channel_args=[
                    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
                    # Reconnect within a second of Triton coming back (default backoff grows to 2 min).
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.min_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ])
            self._loop = loop
        self._ensure_probe()
        return self._control_client if control and self._control_client is not None else self._client

    async def _call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """One control-plane call on the async client, bounded by ``timeout`` seconds."""
        timeout = timeout or self.timeout
        client = self._aio(control=timeout > self.timeout)
        if self.protocol == "grpc":
            kwargs["client_timeout"] = timeout
        return await asyncio.wait_for(getattr(client, method)(*args, **kwargs), timeout + 1)

    # -- loading -------------------------------------------------------------------------------

    def load_sync(self, model: str, version: int) -> ModelVersion:
        """Start-up load (no event loop yet), with a fresh synchronous client."""
        if (model, version) in self._info:
            return self._info[(model, version)]
        path = self.local.model_file(model, version)
        client = self._sync_client()
        try:
            deadline = time.monotonic() + STARTUP_WAIT_S
            while True:
                try:
                    # Live, not ready: one broken or loading model of anyone's makes a shared
                    # Triton "not ready"; our own versions are waited for one by one below.
                    if client.is_server_live():
                        break
                except Exception as e:  # refused: Triton still starting
                    last = e
                else:
                    last = None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Triton at {self.url} not live after {STARTUP_WAIT_S:.0f}s ({last})")
                time.sleep(0.5)
            wanted = self._wanted.get(model, set()) | {version}
            deadline = time.monotonic() + LOAD_TIMEOUT_S
            while (versions := _to_load(model, wanted, _index_states(self._index_sync(client)))) is not None:
                if versions:
                    kwargs = {"client_timeout": LOAD_TIMEOUT_S} if self.protocol == "grpc" else {}
                    client.load_model(model, config=self._override(model, versions), **kwargs)
                    break
                if time.monotonic() > deadline:  # another worker's load: wait for it, do not redo it
                    raise RuntimeError(f"Triton: {model} still loading elsewhere after {LOAD_TIMEOUT_S:.0f}s")
                time.sleep(0.2)
            self._wait_ready_sync(client, model, version)
            self._infer_sync(client, model, version, self._warm_input(model))
        finally:
            client.close()
        self._wanted.setdefault(model, set()).add(version)
        info = self._info[(model, version)] = ModelVersion(model, version, file_sha256(path))
        log.info("triton %s: loaded model %s version %d", self.url, model, version)
        return info

    def _index_sync(self, client: Any) -> Any:
        if self.protocol == "grpc":
            return client.get_model_repository_index(as_json=True)
        return client.get_model_repository_index()

    def _wait_ready_sync(self, client: Any, model: str, version: int) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while not client.is_model_ready(model, str(version)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Triton: {model} version {version} not ready after {LOAD_TIMEOUT_S:.0f}s")
            time.sleep(0.1)

    def _infer_sync(self, client: Any, model: str, version: int, x: np.ndarray) -> list[np.ndarray]:
        module = self._sync_module()
        cfg = self.config(model)
        inp = module.InferInput(cfg.inputs[0].name, list(x.shape), np_to_triton_dtype(x.dtype))
        inp.set_data_from_numpy(x)
        outputs = [module.InferRequestedOutput(o.name) for o in cfg.outputs]
        res = client.infer(model, [inp], model_version=str(version), outputs=outputs)
        return [res.as_numpy(o.name) for o in cfg.outputs]

    def _lock(self, model: str) -> asyncio.Lock:
        return self._locks.setdefault(model, asyncio.Lock())

    async def _apply(self, model: str, wanted: set[int]) -> None:
        """Make Triton serve ``wanted`` versions of ``model`` plus what it serves already."""
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            states = _index_states(await self._call("get_model_repository_index", **self._index_kwargs()))
            versions = _to_load(model, wanted, states)
            if versions is None:
                return
            if versions:
                await self._call("load_model", model, config=self._override(model, versions), timeout=LOAD_TIMEOUT_S)
                return
            if time.monotonic() > deadline:  # another worker's load: wait for it, do not redo it
                raise RuntimeError(f"Triton: {model} still loading elsewhere after {LOAD_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.2)

    def _index_kwargs(self) -> dict[str, Any]:
        return {"as_json": True} if self.protocol == "grpc" else {}

    async def _wait_ready(self, model: str, version: int) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while not await self._call("is_model_ready", model, str(version)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Triton: {model} version {version} not ready after {LOAD_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.1)

    async def load(self, model: str, version: int) -> ModelVersion:
        if (model, version) in self._info:
            return self._info[(model, version)]
        path = self.local.model_file(model, version)
        async with self._lock(model):
            await self._apply(model, self._wanted.get(model, set()) | {version})
            await self._wait_ready(model, version)
            await self._infer(model, self._warm_input(model), version)  # warm before any traffic
            self._wanted.setdefault(model, set()).add(version)
            info = self._info[(model, version)] = ModelVersion(model, version, await asyncio.to_thread(file_sha256, path))
        log.info("triton %s: loaded model %s version %d", self.url, model, version)
        return info

    async def unload(self, model: str, version: int) -> None:
        async with self._lock(model):
            self._info.pop((model, version), None)
            wanted = self._wanted.get(model, set())
            wanted.discard(version)
            states = _index_states(await self._call("get_model_repository_index", **self._index_kwargs()))
            remaining = (wanted | _ready_on_server(model, states)) - {version}
            if remaining:
                await self._call("load_model", model, config=self._override(model, remaining), timeout=LOAD_TIMEOUT_S)
            else:
                await self._call("unload_model", model, timeout=LOAD_TIMEOUT_S)

    def mark_ready(self) -> None:
        self._started = True

    # -- readiness -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self._aio()  # starts the probe in the serving loop
        return self._started and self._reachable and not self._closed

    def _ensure_probe(self) -> None:
        if self._closed or not self._started:
            return
        if self._probe_task is None or self._probe_task.done() or self._probe_task.get_loop() is not self._loop:
            self._kick = asyncio.Event()
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop(), name="triton-probe")

    async def _probe_loop(self) -> None:
        while not self._closed:
            try:
                ok = await self._probe()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                ok = False
                log.debug("triton probe failed: %s", e)
            if ok != self._reachable:
                log.warning("triton %s: %s", self.url, "reachable again, ready" if ok else "unreachable, not ready")
            self._reachable = ok
            assert self._kick is not None
            try:
                await asyncio.wait_for(self._kick.wait(), PROBE_INTERVAL_S)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    async def _probe(self) -> bool:
        """Triton up and every wanted version READY; re-loads missing ones (a restarted Triton)."""
        # Live, not ready: Triton's strict readiness is false while any model loads or after any
        # model failed to load, another worker's or tenant's included; ours are checked below.
        if not await self._call("is_server_live", timeout=min(self.timeout, 2.0)):
            return False
        states = _index_states(await self._call("get_model_repository_index", **self._index_kwargs()))
        missing = {m: w for m, w in self._wanted.items() if not w <= _ready_on_server(m, states)}
        if missing:
            self._reachable = False  # requests for those versions fail until they are back
            log.warning("triton %s: re-loading %s", self.url, {m: sorted(w) for m, w in missing.items()})

            async def reload(model: str, versions: set[int]) -> None:
                async with self._lock(model):
                    await self._apply(model, versions)
                    for v in sorted(versions):
                        await self._wait_ready(model, v)
                        await self._infer(model, self._warm_input(model), v)

            await asyncio.gather(*(reload(m, w) for m, w in missing.items()))
        return True

    # -- serving -------------------------------------------------------------------------------

    def loaded_versions(self, model: str) -> list[int]:
        return sorted(v for (m, v) in self._info if m == model)

    def version_info(self, model: str, version: int) -> ModelVersion:
        return self._info[(model, version)]

    async def infer(self, model: str, x: np.ndarray, version: int) -> list[np.ndarray]:
        if (model, version) not in self._info:
            raise _unavailable(f"model {model} version {version} is not loaded")
        return await self._infer(model, x, version)

    async def _infer(self, model: str, x: np.ndarray, version: int) -> list[np.ndarray]:
        cfg = self.config(model)
        module = self._aio_module()
        x = np.ascontiguousarray(x)
        inp = module.InferInput(cfg.inputs[0].name, list(x.shape), np_to_triton_dtype(x.dtype))
        inp.set_data_from_numpy(x)
        outputs = [module.InferRequestedOutput(o.name) for o in cfg.outputs]
        try:
            client = self._aio()
            call = client.infer(model, [inp], model_version=str(version), outputs=outputs,
                                **({"client_timeout": self.timeout} if self.protocol == "grpc" else {}))
            res = await asyncio.wait_for(call, self.timeout + 0.5)  # belt and braces for both clients
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise self._failure(model, version, e) from e
        # No ``_reachable = True`` here: one model answering says nothing of the others still
        # re-loading after a Triton restart; only the probe, which checks them all, says ready.
        return [res.as_numpy(o.name) for o in cfg.outputs]

    def _failure(self, model: str, version: int, e: Exception) -> LivenessError:
        status = str(e.status() or "") if isinstance(e, InferenceServerException) else ""
        timed_out = isinstance(e, (asyncio.TimeoutError, TimeoutError)) or "DEADLINE_EXCEEDED" in status
        if timed_out:
            reason = f"no answer within {self.timeout:g}s"
            retry = max(1, math.ceil(self.timeout))
        else:
            reason = (str(e) or type(e).__name__).splitlines()[0][:200]
            retry = 1
            self._reachable = False  # refused / not ready: the probe decides when we are back
            if self._kick is not None:
                self._kick.set()
        log.warning("triton %s: %s version %d failed: %s", self.url, model, version, reason)
        return _unavailable(f"The inference server cannot run model {model} version {version} right now: {reason}.",
                            retry)

    def close(self) -> None:
        self._closed = True
        if self._probe_task is not None and not self._probe_task.done():
            self._probe_task.cancel()
        clients = [c for c in (self._client, self._control_client) if c is not None]
        self._client = self._control_client = None
        if clients and self._loop is not None and not self._loop.is_closed() and self._loop.is_running():
            for client in clients:
                try:
                    self._loop.create_task(client.close())
                except RuntimeError:
                    pass
