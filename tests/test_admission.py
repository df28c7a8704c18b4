"""The one admission context (liveness.admission): a unit is reserved only once the input proved
valid, committed on success, refunded on our failure and on cancellation (also mid-reserve),
canary routing is sticky per key, and the key store's reserve/commit/refund are called from
that one module only.  Real SQLite key store files; the use cases on the fake inference backend
(tests/fakes.py) where a whole check runs."""

from __future__ import annotations

import ast
import asyncio
import io
import threading

import numpy as np
import pytest
from PIL import Image

from liveness.admission import ANONYMOUS, Admission, FixedRouting
from liveness.errors import INTERNAL_ERROR, NO_FACE, QUOTA_EXCEEDED, LivenessError
from liveness.keys import Prepaid, SqliteKeyStore
from liveness.rollout.router import Resolved, Router
from liveness.settings import Settings
from tests.conftest import REPO
from tests.fakes import MODEL_REPOSITORY, Box, FakeBackend, fake_app, retinaface_responder


class LoggedKeys(SqliteKeyStore):
    """A real SQLite key store that logs the admission calls; ``hold`` blocks the reservation
    thread until released, like a busy database."""

    def __init__(self, path, hold: bool = False) -> None:
        super().__init__(path)
        self.log: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def check_credential(self, credential):
        self.log.append("check")
        return super().check_credential(credential)

    def reserve_credential(self, credential):
        self.entered.set()
        self.release.wait(10)
        self.log.append("reserve")
        return super().reserve_credential(credential)

    def commit(self, reservation):
        self.log.append("commit")
        super().commit(reservation)

    def refund(self, reservation):
        self.log.append("refund")
        super().refund(reservation)


STATIC = FixedRouting(Router({"m": Resolved(1)}))


@pytest.fixture
def keys(tmp_path):
    k = LoggedKeys(tmp_path / "keys.sqlite3")
    yield k
    k.close()


def used(keys, name: str) -> int:
    return keys.usage(name).used


def jpeg(width: int = 640, height: int = 480) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(60, 200, (height, width, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


# -- the context on its own ------------------------------------------------------------------------


def test_commit_on_success_refund_on_our_exception_nothing_before_input_valid(keys):
    key = keys.create("k", 5).raw_key
    admission = Admission(keys, STATIC)

    async def scenario():
        async with admission.admit(key) as ctx:  # admitted, never declared valid: nothing reserved
            assert ctx.key_id == keys.get("k").key_id and await ctx.versions() == {"m": 1}
        assert keys.log == ["check"] and not ctx.charged

        keys.log.clear()
        with pytest.raises(LivenessError):
            async with admission.admit(key):
                raise LivenessError(NO_FACE, "bad input, before the unit")
        assert keys.log == ["check"]

        keys.log.clear()
        async with admission.admit(key) as ctx:
            await ctx.input_valid()
            await ctx.input_valid()  # once per request
        assert keys.log == ["check", "reserve", "commit"] and ctx.charged

        keys.log.clear()
        with pytest.raises(RuntimeError):
            async with admission.admit(key) as ctx:
                await ctx.input_valid()
                raise RuntimeError("ours")
        assert keys.log == ["check", "reserve", "refund"] and not ctx.charged

        keys.log.clear()
        async with admission.admit(key) as ctx:
            await ctx.input_valid()
            ctx.waive()  # no verdict (a video's FailureToAcquire): the block succeeds, unpaid
        assert keys.log == ["check", "reserve", "refund"] and not ctx.charged

    asyncio.run(scenario())
    assert used(keys, "k") == 1


def test_prepaid_and_no_auth_are_admitted_and_never_charged(keys):
    info = keys.create("k", 1).info
    keys.commit(keys.reserve_id(info.key_id))  # the quota is spent (by the session itself)
    keys.log.clear()

    async def scenario():
        async with Admission(keys, STATIC).admit(Prepaid(info.key_id, "sid")) as ctx:
            await ctx.input_valid()
        assert keys.log == ["check"] and not ctx.charged
        async with Admission(None, STATIC).admit(None) as anon:
            await anon.input_valid()
        assert anon.key_id == ANONYMOUS and not anon.charged

    asyncio.run(scenario())
    assert used(keys, "k") == 1


def test_a_spent_quota_is_refused_before_the_block_and_concurrency_never_overspends(keys):
    key = keys.create("k", 3).raw_key
    admission = Admission(keys, STATIC)

    async def one():
        async with admission.admit(key) as ctx:
            await asyncio.sleep(0)
            await ctx.input_valid()
            await asyncio.sleep(0.01)
        return ctx.charged

    async def scenario():
        outcomes = await asyncio.gather(*(one() for _ in range(10)), return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, LivenessError)]
        assert outcomes.count(True) == 3 and len(refused) == 7
        assert {e.kind for e in refused} == {QUOTA_EXCEEDED}
        ran = []
        with pytest.raises(LivenessError) as e:
            async with admission.admit(key):
                ran.append(1)
        assert e.value.kind is QUOTA_EXCEEDED and not ran  # refused at admission: no work

    asyncio.run(scenario())
    assert used(keys, "k") == 3


def test_cancelled_mid_reserve_leaves_nothing_charged(tmp_path):
    keys = LoggedKeys(tmp_path / "keys.sqlite3", hold=True)
    key = keys.create("k", 5).raw_key
    admission = Admission(keys, STATIC)
    after = []

    async def scenario():
        async def request():
            async with admission.admit(key) as ctx:
                ctx.after_success(lambda: asyncio.sleep(0, after.append(1)))
                await ctx.input_valid()
                return "answer"

        task = asyncio.create_task(request())
        while not keys.entered.is_set():
            await asyncio.sleep(0.005)
        task.cancel()  # the deadline passes while the reservation thread is still running
        await asyncio.sleep(0.05)
        keys.release.set()  # ... and then the thread reserves the unit
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert keys.log == ["check", "reserve", "refund"] and not after
    assert used(keys, "k") == 0
    keys.close()


def test_cancelled_after_the_reserve_is_refunded(keys):
    key = keys.create("k", 5).raw_key
    admission = Admission(keys, STATIC)

    async def scenario():
        reserved = asyncio.Event()

        async def request():
            async with admission.admit(key) as ctx:
                await ctx.input_valid()
                reserved.set()
                await asyncio.Event().wait()  # the work never ends by itself

        task = asyncio.create_task(request())
        await reserved.wait()  # not a 0.2 s wait_for: a busy machine can take longer to reserve
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert keys.log == ["check", "reserve", "refund"] and used(keys, "k") == 0


def test_after_success_work_runs_after_the_commit_and_only_on_success(keys):
    key = keys.create("k", 5).raw_key
    admission = Admission(keys, STATIC)

    async def scenario():
        async def work():
            keys.log.append("shadow")

        async with admission.admit(key) as ctx:
            await ctx.input_valid()
            ctx.after_success(work)
            assert "commit" not in keys.log
        await asyncio.sleep(0.01)
        assert keys.log == ["check", "reserve", "commit", "shadow"]
        keys.log.clear()
        with pytest.raises(LivenessError):
            async with admission.admit(key) as ctx:
                await ctx.input_valid()
                ctx.after_success(work)
                raise LivenessError(INTERNAL_ERROR, "ours")
        await asyncio.sleep(0.01)
        assert keys.log == ["check", "reserve", "refund"]

    asyncio.run(scenario())


def test_canary_is_sticky_per_key_and_one_route_per_request(keys):
    routing = FixedRouting(Router({"m": Resolved(1, 2, "canary", 50.0), "s": Resolved(1, 3, "shadow", 50.0)}))
    admission = Admission(keys, routing)
    raw = [keys.create(f"k{i}", 100).raw_key for i in range(24)]

    async def versions_of(key) -> set[int]:
        seen = set()
        for _ in range(6):
            async with admission.admit(key) as ctx:
                first = await ctx.route()
                assert await ctx.route() is first  # routed once: shadow sampling too
                seen.add((await ctx.versions())["m"])
        return seen

    async def scenario():
        per_key = [await versions_of(k) for k in raw]
        assert all(len(s) == 1 for s in per_key)  # sticky: a key sees one version, not a mix
        assert set().union(*per_key) == {1, 2}  # ... and the canary serves some keys
        anonymous = Admission(None, routing)  # no key: drawn per request
        seen = set()
        for _ in range(60):
            async with anonymous.admit(None) as ctx:
                seen.add((await ctx.versions())["m"])
        assert seen == {1, 2}

    asyncio.run(scenario())


# -- the use cases on it (LivenessApp on the fake backend) -------------------------------------------


@pytest.fixture
def app(tmp_path, monkeypatch):
    settings = Settings(model_repository=MODEL_REPOSITORY, db_path=tmp_path / "db.sqlite3",
                        model_policy_file=tmp_path / "none.toml")
    backend = FakeBackend()  # RetinaFace finds no face until a test says otherwise
    a = fake_app(settings, backend, monkeypatch)
    logged = LoggedKeys(tmp_path / "keys.sqlite3")
    a.admission.keys.close()
    monkeypatch.setattr(a, "admission", Admission(logged, a.routing))
    yield a, backend, logged
    a.close()


def test_check_image_reserves_only_valid_input_and_refunds_our_failure(app):
    a, backend, keys = app
    key = keys.create("k", 5).raw_key

    with pytest.raises(LivenessError) as e:
        asyncio.run(a.check_image(key, b"not an image"))
    assert e.value.status == 415 and keys.log == ["check"]  # not an image

    keys.log.clear()
    with pytest.raises(LivenessError) as e:
        asyncio.run(a.check_image(key, jpeg()))
    assert e.value.kind is NO_FACE and keys.log == ["check"]  # bad input never holds a unit

    backend.respond("retinaface", retinaface_responder([Box(0.3, 0.25, 0.35, 0.45)]))
    keys.log.clear()
    result = asyncio.run(a.check_image(key, jpeg()))
    assert result.is_live and keys.log == ["check", "reserve", "commit"]

    def broken(crop):
        raise RuntimeError("the model server went away")

    backend.respond("minifasnet_v2", broken)
    keys.log.clear()
    with pytest.raises(LivenessError) as e:
        asyncio.run(a.check_image(key, jpeg()))
    assert e.value.kind is INTERNAL_ERROR and keys.log == ["check", "reserve", "refund"]
    assert used(keys, "k") == 1


def test_check_images_is_one_unit_once_every_image_is_valid(app):
    a, backend, keys = app
    key = keys.create("k", 5).raw_key
    backend.respond("retinaface", retinaface_responder([Box(0.3, 0.25, 0.35, 0.45)]))
    with pytest.raises(LivenessError) as e:
        asyncio.run(a.check_images(key, [jpeg(), b"corrupt"]))
    assert e.value.details["image"] == 1 and keys.log == ["check"]
    keys.log.clear()
    assert len(asyncio.run(a.check_images(key, [jpeg(), jpeg(320, 240)]))) == 2
    assert keys.log == ["check", "reserve", "commit"] and used(keys, "k") == 1


def test_cancelled_check_mid_reserve_is_not_charged(app, tmp_path):
    a, backend, _ = app
    backend.respond("retinaface", retinaface_responder([Box(0.3, 0.25, 0.35, 0.45)]))
    a.admission.keys.close()
    keys = LoggedKeys(tmp_path / "slow.sqlite3", hold=True)
    a.admission = Admission(keys, a.routing)  # closed with the app
    key = keys.create("k", 5).raw_key

    async def scenario():
        task = asyncio.create_task(a.check_image(key, jpeg()))
        while not keys.entered.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.sleep(0.05)
        keys.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert keys.log == ["check", "reserve", "refund"] and used(keys, "k") == 0


# -- one module --------------------------------------------------------------------------------------

SETTLING = {"reserve", "reserve_id", "reserve_credential", "commit", "refund"}


def _sources():
    for root in (REPO / "liveness", REPO / "edge"):
        if root.is_dir():
            yield from sorted(root.rglob("*.py"))
    yield REPO / "service.py"


def _calls(path, names):
    """(line, receiver source) of every call ``<receiver>.<name>(<some argument>)``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names
                and (node.args or node.keywords)):
            yield node.lineno, ast.unparse(node.func.value)


def test_reserve_commit_refund_and_routing_are_called_from_one_module():
    charging: dict[str, list[int]] = {}
    routing: dict[str, list[int]] = {}
    for path in _sources():
        rel = path.relative_to(REPO).as_posix()
        for line, receiver in _calls(path, SETTLING):
            if rel.startswith("liveness/keys/") and receiver == "self":
                continue  # a key store's own methods delegating to each other (the contract itself)
            charging.setdefault(rel, []).append(line)
        for line, receiver in _calls(path, {"route"}):
            if receiver.endswith("router"):
                routing.setdefault(rel, []).append(line)
    assert set(charging) == {"liveness/admission.py"}, charging
    assert set(routing) == {"liveness/admission.py"}, routing
