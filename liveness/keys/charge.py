"""One quota unit per successful request, also when the request is cancelled half-way.

A gRPC deadline (or any cancellation) can hit while a key-store call runs in its worker thread.
Cancelling the awaiting task does not stop that thread: a reservation it makes would stay charged
with nobody left to refund it.  So every store call here is waited for to the end, and a request
that was cancelled gives its unit back: a client never pays for an answer it did not get.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, TypeVar

from .base import Credential, KeyStore, Reservation

T = TypeVar("T")


async def _to_end(call: Callable[[], T]) -> tuple[T, bool]:
    """Run ``call`` in a thread and wait for its outcome even if this task is cancelled meanwhile;
    -> (result, cancelled).  Its exception propagates (a CancelledError instead, if cancelled)."""
    fut = asyncio.ensure_future(asyncio.to_thread(call))
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancelled = True  # the thread runs on: keep waiting for it
        except BaseException:
            break
    if fut.exception() is not None:
        if cancelled:
            raise asyncio.CancelledError
        raise fut.exception()  # type: ignore[misc]
    return fut.result(), cancelled


@asynccontextmanager
async def charged(keys: KeyStore, credential: Credential) -> AsyncIterator[Reservation]:
    """Reserve one unit of the key's quota; keep it only if the body succeeds and the request was
    not cancelled (refunded otherwise)."""
    reservation, cancelled = await _to_end(lambda: keys.reserve_credential(credential))
    if cancelled:
        await _to_end(lambda: keys.refund(reservation))
        raise asyncio.CancelledError
    try:
        yield reservation
    except BaseException:
        await _to_end(lambda: keys.refund(reservation))
        raise
    _, cancelled = await _to_end(lambda: keys.commit(reservation))
    if cancelled:  # the answer will not reach the client
        await _to_end(lambda: keys.refund(reservation))
        raise asyncio.CancelledError
