"""How much memory decoding may take: per image, and for all decodes of a process at once.

A compressed image says in its header how big it will be once decoded, so the cost is known
before a single pixel is: ``width x height x channels x bytes per sample`` for the decoder's
output, plus the 8-bit BGR copy we make of it (alpha compositing, 16 -> 8 bits, orientation).
A 280 KB PNG of 6000x6000 16-bit RGBA is about 400 MB that way, so pixels alone are not the
measure.

* ``ImageLimits.max_decode_bytes`` refuses one image over budget (``image_too_many_pixels``,
  413), from the header.
* ``DecodeMemory`` is a process-wide pool that every decode holds its estimate of, so a
  burst of large images is decoded a few at a time instead of all at once; a decode that cannot
  get its memory within ``wait_s`` is refused with ``busy`` (503, Retry-After), never an
  out-of-memory kill.
* ``tune_malloc`` makes freed image buffers go back to the operating system: glibc otherwise
  raises its mmap threshold to the largest freed block (up to 32 MB) and keeps the memory of
  every later image of that size in its heap, so RSS never comes down after a burst.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from liveness.errors import BUSY, LivenessError

# Buffers of at least this size are mmapped and returned on free; smaller ones (a typical
# selfie's 1-9 MB) keep the heap's speed.  Freed heap tops are trimmed after a large decode.
MMAP_THRESHOLD = 16 * 1024 * 1024
TRIM_AFTER = 64 * 1024 * 1024
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def tune_malloc(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (a fixed value also stops its dynamic growth).  False where
    the C library is not glibc (nothing to tune)."""
    return bool(_LIBC is not None and _LIBC.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def release_freed_memory() -> None:
    """Give free heap pages back to the operating system (glibc ``malloc_trim``)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class DecodeMemory:
    """A counting pool of bytes: ``with pool.hold(n): decode()``."""

    def __init__(self, capacity: int, wait_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = int(capacity)
        self.wait_s = float(wait_s)
        self._clock = clock
        self._in_use = 0
        self._cond = threading.Condition()

    @property
    def in_use(self) -> int:
        return self._in_use

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        # An image larger than the whole pool waits for an empty pool, then runs alone: the
        # per-image budget (checked before) is what refuses it, not the pool.
        need = min(int(nbytes), self.capacity)
        deadline = self._clock() + self.wait_s
        with self._cond:
            while self._in_use + need > self.capacity:
                left = deadline - self._clock()
                if left <= 0 or not self._cond.wait(left):
                    if self._in_use + need <= self.capacity:
                        break
                    raise LivenessError(
                        BUSY,
                        "the server is decoding too many large images at once; retry shortly",
                        {"retry_after": 1},
                    )
            self._in_use += need
        try:
            yield
        finally:
            with self._cond:
                self._in_use -= need
                self._cond.notify_all()
            if nbytes >= TRIM_AFTER:
                release_freed_memory()


DEFAULT_CAPACITY = 1024 * 1024 * 1024
_default: DecodeMemory | None = None
_default_lock = threading.Lock()


def default_decode_memory() -> DecodeMemory:
    """The process's pool (``configure_decode_memory`` sets it; 1 GiB until then)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = DecodeMemory(DEFAULT_CAPACITY)
        return _default


def configure_decode_memory(capacity: int, wait_s: float) -> DecodeMemory:
    """Set the process's pool (once per worker, from settings) and tune malloc for it."""
    global _default
    tune_malloc()
    with _default_lock:
        _default = DecodeMemory(capacity, wait_s)
        return _default
