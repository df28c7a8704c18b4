"""The one way domain code reads the time: a clock is injected, never looked up.

A ``Clock`` is any zero-argument callable returning seconds as a float.  Services take one as a
constructor argument (default: the real clock below), so tests drive time with a fake clock
(``tests/fakes.py: FakeClock``) instead of sleeping and racing the machine's scheduler.

* :data:`wall` (``time.time``): timestamps that are stored or compared across processes
  (session expiry, token ``iat``/``exp``, frame arrival times of a challenge session);
* :data:`monotonic` (``time.monotonic``): intervals inside one process (refresh periods,
  deadlines), immune to the wall clock being set.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> float: ...


wall: Clock = time.time
monotonic: Clock = time.monotonic
