"""Quota under cancellation: a gRPC deadline that fires while the key store is reserving, or
while the check runs, must leave nothing charged (real SQLite key store; the slow reserve is the
one seam)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from liveness.keys import SqliteKeyStore
from liveness.admission import charged


class SlowReserve(SqliteKeyStore):
    """Holds the reservation thread until released, like a busy database would."""

    def __init__(self, path):
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()

    def reserve_credential(self, credential):
        self.entered.set()
        self.release.wait(10)
        return super().reserve_credential(credential)


@pytest.fixture
def store(tmp_path):
    s = SlowReserve(tmp_path / "keys.sqlite3")
    yield s
    s.close()


def used(store, name) -> int:
    return store.usage(name).used


def test_cancelled_during_the_reservation_is_not_charged(store):
    key = store.create("k", 5).raw_key

    async def scenario():
        async def request():
            async with charged(store, key):
                return "answer"

        task = asyncio.create_task(request())
        while not store.entered.is_set():
            await asyncio.sleep(0.005)
        task.cancel()  # the deadline passes while the reservation thread is still running
        await asyncio.sleep(0.05)
        store.release.set()  # ... and then the thread reserves the unit
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert used(store, "k") == 0


def test_cancelled_during_the_check_is_refunded_and_success_is_charged(store):
    store.release.set()
    key = store.create("k", 5).raw_key

    async def scenario():
        checking = asyncio.Event()

        async def request(hang: bool):
            async with charged(store, key):
                checking.set()
                if hang:
                    await asyncio.Event().wait()  # the check never ends by itself
                return "answer"

        assert await request(False) == "answer"
        checking.clear()
        task = asyncio.create_task(request(True))
        await checking.wait()  # the unit is reserved and the check runs ...
        task.cancel()  # ... when the deadline passes (was: a 50 ms wait_for, racing the reservation)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert used(store, "k") == 1


def test_a_refused_key_is_refused_not_cancelled(store):
    store.release.set()
    key = store.create("k", 1).raw_key

    async def scenario():
        async with charged(store, key):
            pass
        async with charged(store, key):
            pass

    with pytest.raises(Exception) as exc:
        asyncio.run(scenario())
    assert getattr(exc.value, "code", None) == "quota_exceeded"
    assert used(store, "k") == 1
