"""One admission context for every entry point: who asks, which model versions serve, who pays.

    credential -> admit (key valid, quota left; nothing charged)
               -> route (canary sticky per key, shadow sampled)           await ctx.route()
               -> the flow declares its input valid: ONE unit reserved      await ctx.input_valid()
               -> the block succeeds: the unit is committed, then the after-success work runs
                  (shadow inference);  the block raises (our failure, cancellation): refunded

    async with admission.admit(credential) as ctx:
        versions = await ctx.versions()
        prepared = await prepare(image, versions)   # bad input raises here: nothing reserved
        await ctx.input_valid()                     # decoded, usable face: one unit from here
        result = await classify(prepared, versions)
    # committed here (or refunded if the block raised; ``ctx.waive()`` refunds a block that ends
    # without a verdict, e.g. a video's FailureToAcquire)

Charging rules (README "A request is charged only when it succeeds"): the key and its quota are
checked before any work; a unit is reserved only once the input has proved valid, so bad input
never holds a unit a concurrent valid request of the same key needs; concurrent requests never
overspend (the reservation is one atomic conditional increment in the store).  ``Prepaid``
callers (a session's client: the session paid at creation) and a server without authentication
are admitted and never charged.

Cancellation (a gRPC deadline, a client gone) can hit while a key-store call runs in its worker
thread.  Cancelling the awaiting task does not stop that thread: a reservation it makes would stay
charged with nobody left to refund it.  So every store call here is waited for to the end, and a
request that was cancelled gives its unit back: a client never pays for an answer it did not get.

A process that dies (SIGKILL, OOM, power) between reserve and commit cannot refund: every
reservation is a lease in the store, and a lease neither committed nor refunded within
``reservation_lease_s`` is given back by ``KeyStore.reclaim_expired`` - at start-up and by each
worker's background sweep every ``SWEEP_EVERY_S``.  Over HTTP the commit waits until the answer
has been written to the socket (``settle_after_send``, run by the edge as the response's
background task), so a crash never leaves a charge for an answer that was not sent; at most the
requests in flight at the crash are answered and then given back (in the client's favour).

This is the only module that calls the key store's reserve / commit / refund
(tests/test_admission.py reads the sources to keep it so).
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import AsyncIterator, Awaitable, Callable, Iterator, Protocol, TypeVar

from liveness.keys import Credential, KeyInfo, KeyStore, Prepaid, Reservation
from liveness.rollout.router import Route, Router

log = logging.getLogger("liveness.admission")

T = TypeVar("T")

# Set by the edge around one HTTP request (settle_after_send): a successful block's commit waits
# there until the answer has been sent.
_AFTER_SEND: ContextVar[list[Callable[[], Awaitable[None]]] | None] = ContextVar("after_send", default=None)


@contextmanager
def settle_after_send() -> Iterator[list[Callable[[], Awaitable[None]]]]:
    """Within this, a request that succeeds is not committed at the end of its block: its
    settlement is appended to the yielded list, for the edge to run once the response has been
    written to the socket (``await settle()``), or with ``settle(delivered=False)`` when it knows
    the answer did not reach the client (it is then refunded).  A process killed in between leaves
    a lease (reclaimed: the client got nothing, pays nothing) instead of a charge for an answer
    never sent."""
    pending: list[Callable[[], Awaitable[None]]] = []
    token = _AFTER_SEND.set(pending)
    try:
        yield pending
    finally:
        _AFTER_SEND.reset(token)

# How often a worker sweeps for reservations whose lease expired (liveness.keys leases).
SWEEP_EVERY_S = 30.0
ANONYMOUS = "-"  # the key_id of every caller when authentication is disabled


class Routing(Protocol):
    """What admission needs of a worker's routing table (``liveness.rollout.manager.LiveRouting``)."""

    router: Router

    async def refresh(self) -> None: ...


class FixedRouting:
    """A routing table that never changes (tests, tools)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def refresh(self) -> None:
        return None


# -- the key store, waited for to the end --------------------------------------------------------


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


class _Unit:
    """One quota unit of one credential: reserved, then committed or refunded exactly once."""

    def __init__(self, keys: KeyStore, credential: Credential) -> None:
        self.keys = keys
        self.credential = credential
        self.reservation: Reservation | None = None

    async def reserve(self) -> Reservation:
        """Raises the store's refusal (quota_exceeded, ...); cancelled: nothing stays reserved."""
        reservation, cancelled = await _to_end(lambda: self.keys.reserve_credential(self.credential))
        if cancelled:
            await _to_end(lambda: self.keys.refund(reservation))
            raise asyncio.CancelledError
        self.reservation = reservation
        return reservation

    async def commit(self) -> None:
        """Cancelled while committing: the answer will not reach the client, so it is refunded."""
        reservation = self._take()
        _, cancelled = await _to_end(lambda: self.keys.commit(reservation))
        if cancelled:
            await _to_end(lambda: self.keys.refund(reservation))
            raise asyncio.CancelledError

    async def refund(self) -> None:
        reservation = self._take()
        await _to_end(lambda: self.keys.refund(reservation))

    def _take(self) -> Reservation:
        reservation, self.reservation = self.reservation, None
        if reservation is None:
            raise RuntimeError("no reserved unit to settle")
        return reservation


# -- the per-request context ---------------------------------------------------------------------


@dataclass(eq=False)
class Admitted:
    """One admitted request: its key, its routed model versions, and at most one quota unit."""

    admission: "Admission"
    credential: Credential
    key: KeyInfo | None  # None when authentication is disabled
    charged: bool = False  # True once the unit was committed (after the block)
    _route: Route | None = field(default=None, repr=False)
    _unit: _Unit | None = field(default=None, repr=False)
    _declared: bool = field(default=False, repr=False)
    _waived: bool = field(default=False, repr=False)
    _after: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)

    @property
    def key_id(self) -> str:
        """Who owns what this request creates (sessions): the key's id, ``ANONYMOUS`` without auth."""
        return self.key.key_id if self.key is not None else ANONYMOUS

    @property
    def prepaid(self) -> bool:
        return isinstance(self.credential, Prepaid)

    async def route(self) -> Route:
        """The request's model versions, chosen once (every later call returns the same route)."""
        if self._route is None:
            self._route = await self.admission.route(self.key_id)
        return self._route

    async def versions(self) -> dict[str, int]:
        """model -> the version that decides for this request (a copy)."""
        return dict((await self.route()).primary)

    async def input_valid(self) -> None:
        """The input has proved valid (decoded, a usable face, parameters accepted): reserve the
        request's one unit now.  Raises ``quota_exceeded`` when a concurrent request took the last
        one.  Later calls are no-ops; never charged for ``Prepaid`` or without authentication."""
        if self._declared:
            return
        self._declared = True
        keys = self.admission.keys
        if keys is None or self.prepaid:
            return
        unit = _Unit(keys, self.credential)
        await unit.reserve()
        self._unit = unit

    def waive(self) -> None:
        """The block will end without a verdict (a video's FailureToAcquire, a verdict another
        worker already stored): give the unit back although the block succeeds."""
        self._waived = True

    def after_success(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work()`` in the background once the block succeeded and its unit was committed
        (shadow inference: never delays the answer, never fails it)."""
        self._after.append(work)

    async def _settle(self, ok: bool) -> None:
        unit, self._unit = self._unit, None
        if unit is None:
            return
        if ok and not self._waived:
            await unit.commit()
            self.charged = True
        else:
            await unit.refund()


class Admission:
    """Admission, routing and charging for one worker; ``LivenessApp.admission``."""

    def __init__(
        self, keys: KeyStore | None, routing: Routing, *, clock: Callable[[], float] = time.monotonic,
        sweep_every_s: float = SWEEP_EVERY_S,
    ) -> None:
        self.keys = keys  # None: authentication disabled (every caller admitted, nothing charged)
        self.routing = routing
        self._background: set[asyncio.Task] = set()
        self._clock = clock
        self.sweep_every_s = sweep_every_s
        self._next_sweep = clock() + sweep_every_s  # the start-up sweep is the app's

    def _sweep_if_due(self) -> None:
        """Now and then, in the background: give back units whose process died mid-request
        (``KeyStore.reclaim_expired``; every worker sweeps, a lease is reclaimed once)."""
        if self.keys is None or self._clock() < self._next_sweep:
            return
        self._next_sweep = self._clock() + self.sweep_every_s
        self._spawn(asyncio.to_thread(self.keys.reclaim_expired))

    async def check(self, credential: Credential) -> KeyInfo | None:
        """Refuse unknown or revoked keys and spent quotas before any work, charging nothing
        (a ``Prepaid`` caller only needs its key not revoked).  None without authentication."""
        if self.keys is None:
            return None
        return await asyncio.to_thread(self.keys.check_credential, credential)

    async def identify(self, credential: Credential) -> str:
        """``check``, then the caller's key_id (``ANONYMOUS`` without authentication)."""
        info = await self.check(credential)
        return info.key_id if info is not None else ANONYMOUS

    async def owner(self, credential: Credential) -> str:
        """The caller's key_id for calls on what it already paid for or owns (a session's frames,
        verdict, results, its deletion): the key must be valid, its quota may be spent."""
        if self.keys is None:
            return ANONYMOUS
        return (await asyncio.to_thread(self.keys.authenticate_credential, credential)).key_id

    async def route(self, key_id: str | None) -> Route:
        """The model versions for a request of ``key_id``, with the worker's latest policies:
        a canary is sticky per key (an anonymous caller draws per request); shadows are sampled."""
        await self.routing.refresh()
        return self.route_now(key_id)

    def route_now(self, key_id: str | None) -> Route:
        """``route`` without looking for newer policies (synchronous callers)."""
        return self.routing.router.route(None if key_id in (None, ANONYMOUS) else key_id)

    @asynccontextmanager
    async def admit(self, credential: Credential) -> AsyncIterator[Admitted]:
        """Admit ``credential`` (raises the key's refusal before any work) for one request; see
        the module docstring for the unit's life."""
        self._sweep_if_due()
        ctx = Admitted(self, credential, await self.check(credential))
        try:
            yield ctx
        except BaseException:
            await ctx._settle(False)
            raise
        pending = _AFTER_SEND.get()
        if pending is None:
            await self._succeed(ctx)
        else:  # the edge commits once the answer is on the wire (settle_after_send)
            ctx.charged = ctx._unit is not None and not ctx._waived
            pending.append(partial(self._delivered, ctx))

    async def _delivered(self, ctx: Admitted, delivered: bool = True) -> None:
        """A pending settlement: committed once the answer was delivered; given back when the
        edge knows it was not (a gRPC call whose deadline passed while the answer was sent)."""
        if delivered:
            await self._succeed(ctx)
        else:
            ctx.charged = False
            await ctx._settle(False)

    async def _succeed(self, ctx: Admitted) -> None:
        await ctx._settle(True)
        for work in ctx._after:
            self._spawn(work())

    async def sweep_periodically(self) -> None:
        """``_sweep_if_due`` on a timer, for a worker that gets no requests (run by the edge at
        start-up, cancelled at shutdown)."""
        while True:
            await asyncio.sleep(self.sweep_every_s)
            if self.keys is not None:
                try:
                    await asyncio.to_thread(self.keys.reclaim_expired)
                except Exception:
                    log.warning("reclaiming expired reservations failed", exc_info=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _quietly(coro: Awaitable[object]) -> None:
        try:
            await coro
        except Exception:
            log.warning("background work failed", exc_info=True)
