"""Using the login node's other cores for a cold collect: forked workers, never required.

Forking shares the parent's imported modules and data without pickling them, so a
worker starts in milliseconds. It is used only where it is safe (a start method
"fork" exists and the process has a single thread) and everything falls back to
doing the work in-process when it is not, or when a worker fails.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


PRESSURE_FILE = "/proc/pressure/cpu"
MAX_CPU_PRESSURE_PCT = 20.0


def spare_cpu() -> bool:
    """Another CPU is free now (a shared login node may have none): splitting work whose
    results must be pickled back only pays then. Linux's CPU pressure (the share of the
    last 10 s in which a task waited for a CPU) answers; without it, the load average."""
    try:
        with open(PRESSURE_FILE, encoding="ascii") as handle:
            waiting_pct = float(handle.readline().split("avg10=")[1].split()[0])
        return waiting_pct < MAX_CPU_PRESSURE_PCT
    except (OSError, IndexError, ValueError):
        pass
    try:
        return cpu_count() - os.getloadavg()[0] >= 1.0
    except OSError:
        return False


def can_fork() -> bool:
    """Forking is cheap and safe here: a "fork" start method, one thread, more than one CPU."""
    return (cpu_count() > 1 and threading.active_count() == 1
            and "fork" in multiprocessing.get_all_start_methods())


class ForkedMap:
    """``[function(item) for item in items]`` started now in ``processes`` forked children, so the caller
    can work meanwhile; ``results()`` waits for them.

    A child that raises, dies, or is still busy when ``timeout_s`` seconds have passed since the start (a
    fork taken while another thread held a lock can leave a child blocked forever) makes ``results()``
    None, and every child still running is SIGKILLed (a blocked child may never act on SIGTERM), so the
    caller can do the work in-process.
    """

    def __init__(self, function: Callable[[T], R], items: Sequence[T], processes: int, timeout_s: float) -> None:
        self._size, self._processes = len(items), processes
        self._deadline = time.monotonic() + timeout_s
        self._calls: list[ForkedCall] = []
        self._error: Exception | None = None
        try:
            for start in range(processes):
                share = list(items[start::processes])
                if share:
                    self._calls.append(ForkedCall(functools.partial(_map_share, function, share)))
        except OSError as exc:
            self._error = exc
            self._kill()

    def results(self) -> list[R] | None:
        """The results in the order of ``items``; None when a child failed (logged)."""
        try:
            if self._error is not None:
                raise self._error
            results: dict[int, R] = {}
            for start, call in zip(range(self._processes), self._calls):
                for offset, value in enumerate(call.result(max(0.0, self._deadline - time.monotonic()))):
                    results[start + offset * self._processes] = value
            return [results[index] for index in range(self._size)]
        except (ChildFailed, OSError) as exc:
            log.warning("parallel read failed (%s); reading in-process", exc)
            return None
        finally:
            self._kill()

    def _kill(self) -> None:
        for call in self._calls:
            call.kill()


def _map_share(function: Callable[[T], R], share: list[T]) -> list[R]:
    return [function(item) for item in share]


class ForkedCall:
    """Run ``function()`` in a forked child now; ``result()`` waits for its return value.

    ``result()`` raises ``ChildFailed`` if the child raised or died, so the caller can
    redo the work in-process.
    """

    def __init__(self, function: Callable[[], Any]) -> None:
        context = multiprocessing.get_context("fork")
        self._receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_child, args=(function, sender), daemon=True)
        self._process.start()
        sender.close()

    def result(self, timeout_s: float | None = None) -> Any:
        """The child's return value; a child still busy after ``timeout_s`` is killed."""
        try:
            if not self._receiver.poll(timeout_s):
                self._process.kill()
                raise ChildFailed(f"no result after {timeout_s:.0f} s")
            status, value = self._receiver.recv()
        except (EOFError, OSError) as exc:
            raise ChildFailed(f"child exited without a result ({exc})") from None
        finally:
            self._receiver.close()
            self._process.join()
        if status != "ok":
            raise ChildFailed(value)
        return value

    def kill(self) -> None:
        """SIGKILL the child if it still runs, and reap it."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join()


class ChildFailed(RuntimeError):
    """The forked child raised or died."""


def _child(function: Callable[[], Any], sender: Any) -> None:
    try:
        sender.send(("ok", function()))
    except BaseException as exc:  # noqa: BLE001 - everything goes to the parent, which decides
        sender.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        sender.close()
