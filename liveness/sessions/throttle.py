"""Per-device throttling of app-server sessions (README "Sessions").

Failed attempts (``spoofface`` or an input error) count per (API key, ``device_correlation_id``):
``session_throttle_failures`` of them within ``session_throttle_window_s`` block that device's new
attempts and new sessions for ``session_throttle_cooldown_s``, counted from the latest failure of
the burst that reached the limit.  Time is the injected clock's; the failures live in the session
store (``failures_since`` / ``record_failure``), so every worker sees the same count.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Protocol

from liveness.errors import TOO_MANY_FAILED_ATTEMPTS, LivenessError
from liveness.settings import Settings


class FailureLog(Protocol):
    def record_failure(self, key_id: str, device: str, at: float) -> None: ...

    def failures_since(self, key_id: str, device: str, since: float) -> tuple[int, float | None]: ...


class DeviceThrottle:
    def __init__(self, store: FailureLog, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.limit = settings.session_throttle_failures
        self.window_s = settings.session_throttle_window_s
        self.cooldown_s = settings.session_throttle_cooldown_s
        self.clock = clock

    @property
    def keep_s(self) -> float:
        """How long a failure can still matter (the store's purge keeps failures this long)."""
        return self.window_s + self.cooldown_s

    async def check(self, key_id: str, device: str | None, now: float | None = None) -> None:
        """TOO_MANY_FAILED_ATTEMPTS (429, ``retry_after`` seconds) while ``device`` cools down."""
        if not device:
            return
        now = self.clock() if now is None else now
        n, last = await asyncio.to_thread(self.store.failures_since, key_id, device,
                                           now - self.window_s - self.cooldown_s)
        if last is None or n < self.limit or now >= last + self.cooldown_s:
            return
        # The cool-down runs from the latest failure of a burst that reached the limit in one window.
        burst, _ = await asyncio.to_thread(self.store.failures_since, key_id, device, last - self.window_s)
        if burst >= self.limit:
            retry = int(last + self.cooldown_s - now) + 1
            raise LivenessError(
                TOO_MANY_FAILED_ATTEMPTS,
                f"Too many failed attempts from this device; try again in {retry} s.",
                {"retry_after": retry},
            )

    async def record_failure(self, key_id: str, device: str | None, now: float | None = None) -> None:
        """One failed attempt of ``device`` (nothing is counted without a device id)."""
        if device:
            await asyncio.to_thread(self.store.record_failure, key_id, device, self.clock() if now is None else now)
