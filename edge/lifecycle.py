"""A service worker dies with the ``bentoml serve`` process that started it.

BentoML 1.4.39's ``bentoml serve`` (``_bentoml_impl.server.serving.serve_http``) runs a circus
arbiter in its own main process and main thread; the arbiter spawns every worker
(``python -m _bentoml_impl.worker.service service:Liveness --fd N ...``) with ``os.setsid()`` in
the child (``circus.process.Process.spawn``).  So each worker leads a session and process group of
its own: a SIGKILL of the server's process group, a supervisor's hard stop or an OOM kill of the
arbiter leaves the workers running under PID 1 (or a subreaper), still accepting on the inherited
HTTP socket and on the gRPC port, and the next ``bentoml serve`` dies with ``Address already in use``.

``bind_to_parent()``, called once in every worker (service.py, at import: the worker imports it
before it loads any model), makes the worker stop when its parent goes:

1. ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: the kernel signals the worker when the thread that forked
   it exits; the arbiter forks from the main thread of ``bentoml serve``, so that is the process's
   death.  Linux only.
2. A watchdog thread polls ``os.getppid()``: any change means the parent is gone (it covers other
   systems, a parent that died between the fork and step 1, and a forking thread that is not the
   main one).  It sends the worker the same SIGTERM.  At bind time a worker also checks that its
   parent still holds the listening socket it handed over (``--fd``): one already reparented to
   init or a subreaper before it could bind stops at once.
3. SIGTERM is uvicorn's graceful exit: the HTTP listener closes at once, in-flight requests finish
   and the service's ``on_shutdown`` hooks run (gRPC server stopped, stores closed).  A worker still
   alive ``grace_s`` after its parent went is killed by the watchdog (SIGKILL).

The ``bentoml serve`` process imports service.py too (to build its watchers); there this is a
no-op, so the server itself is never bound to its own parent (a shell, make, systemd).
No BentoML import at module level.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("liveness.lifecycle")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PR_GET_PDEATHSIG = 2
GRACE_S = 30.0  # an in-flight request may take BentoML's traffic timeout (service.py: 30 s)
POLL_S = 0.5

_bound: tuple[int, int] | None = None  # (pid, watched parent pid) of the process that bound itself


def in_bentoml_worker() -> bool:
    """True in a process started as a BentoML service worker (it has a worker index)."""
    if "bentoml" not in sys.modules:
        return False
    from bentoml._internal.context import server_context

    return server_context.worker_index is not None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def set_parent_death_signal(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)`` for this process; False where it cannot be set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = _libc()
        if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(int(sig)), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except OSError as e:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s; the parent watchdog alone stops this worker", e)
        return False
    return True


def parent_death_signal() -> int:
    """This process's parent-death signal (0: none).  Linux only."""
    value = ctypes.c_int(0)
    if _libc().prctl(PR_GET_PDEATHSIG, ctypes.byref(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return value.value


def _inherited_socket_fd() -> int | None:
    """The listening socket circus handed this worker (``--fd N`` or ``--fd=N`` on its command line)."""
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg == "--fd" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--fd="):
            value = arg[len("--fd="):]
        else:
            continue
        return int(value) if value.isdigit() else None
    return None


def parent_holds_socket(parent: int, fd: int | None) -> bool | None:
    """Whether ``parent`` has our inherited socket ``fd`` open (the arbiter keeps every socket it
    hands out, to respawn workers); None when that cannot be told (no /proc, no fd, not our uid)."""
    if fd is None:
        return None
    try:
        ours = os.readlink(f"/proc/self/fd/{fd}")
        if not ours.startswith("socket:"):
            return None
        for name in os.listdir(f"/proc/{parent}/fd"):
            try:
                if os.readlink(f"/proc/{parent}/fd/{name}") == ours:
                    return True
            except OSError:
                continue
    except OSError:  # PermissionError (another uid), no /proc, the parent just went
        return None
    return False


def _stop(reason: str, sig: int, grace_s: float) -> None:
    """Graceful stop now (``sig``), SIGKILL if still alive after ``grace_s``."""
    pid = os.getpid()
    log.warning("%s: stopping worker %d (%s now, SIGKILL after %.0f s)", reason, pid, signal.Signals(sig).name, grace_s)
    os.kill(pid, sig)
    time.sleep(grace_s)
    log.error("worker %d still alive %.0f s after its parent went: SIGKILL", pid, grace_s)
    os.kill(pid, signal.SIGKILL)


def _watch(parent: int, sig: int, grace_s: float, poll_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll_s)
    _stop(f"parent {parent} is gone (now {os.getppid()})", sig, grace_s)


def bind_to_parent(
    *, sig: int = signal.SIGTERM, grace_s: float = GRACE_S, poll_s: float = POLL_S, force: bool = False
) -> int | None:
    """Make this worker stop when its parent process goes (module docstring).  Call once per worker,
    as early as possible; again in the same process it does nothing.  Outside a BentoML worker it
    does nothing unless ``force`` (tests).  Returns the watched parent's pid, or None."""
    global _bound
    if not force and not in_bentoml_worker():
        return None
    pid = os.getpid()
    if _bound is not None and _bound[0] == pid:
        return _bound[1]
    parent = os.getppid()
    set_parent_death_signal(sig)
    _bound = (pid, parent)
    if os.getppid() != parent or parent_holds_socket(parent, _inherited_socket_fd()) is False:
        # The parent went before the kernel could be asked to tell us: nobody supervises this worker.
        reason = f"parent {parent} went before this worker could bind to it"
        threading.Thread(target=_stop, args=(reason, sig, grace_s), name="parent-watchdog", daemon=True).start()
        return parent
    threading.Thread(target=_watch, args=(parent, sig, grace_s, poll_s), name="parent-watchdog", daemon=True).start()
    return parent
