"""Run a function in a forked copy of this process and get its small result back: a second core for
work that threads cannot share (a stat walk is a stat call per file, and two threads hand the GIL over
at every one of them; measured slower than one thread).

Used only where a fork is safe: Linux (the platform imgsync runs its daemon on; macOS forks badly once
system frameworks are loaded), at least two cores this process may run on, and no other Python thread
(a fork copies only the calling thread: a lock another thread held stays held in the child for good).
`Child` is None-safe for callers: `start` returns None where it would not fork.

The child shares nothing back but its result, marshalled through a pipe, and ends with os._exit: it runs
no atexit handler, closes no inherited connection and flushes no buffer of the parent's. Any failure in
the child (an exception, a signal, a short answer) is ChildFailed in the parent, which can then do the
work itself or treat it as unknown; a child is always reaped, killed first if the parent gives up early.
"""

from __future__ import annotations

import marshal
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any


class ChildFailed(Exception):
    """The forked child died, failed or answered nothing readable."""


def can_fork() -> bool:
    if sys.platform != "linux" or threading.active_count() != 1:
        return False
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except OSError:
        return False


def start(fn: Callable[[], Any]) -> Child | None:
    """fn() running in a forked child (its result: marshal-able values), or None where this process
    should not fork (see can_fork)."""
    return Child(fn) if can_fork() else None


class Child:
    def __init__(self, fn: Callable[[], Any]) -> None:
        r, w = os.pipe()
        self._pid: int | None = os.fork()
        if self._pid == 0:  # the child: never returns
            code = 1
            try:
                os.close(r)
                data = marshal.dumps(fn())
                view = memoryview(data)
                while view:
                    view = view[os.write(w, view) :]
                code = 0
            except BaseException:  # the parent reads a failed child as ChildFailed
                pass
            finally:
                os._exit(code)
        os.close(w)
        self._r: int | None = r

    def result(self) -> Any:
        """Wait for the child; its fn() result, or ChildFailed."""
        assert self._r is not None and self._pid is not None, "result() is read once"
        chunks = []
        try:
            while chunk := os.read(self._r, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(self._r)
            self._r = None
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            raise ChildFailed(f"child ended with status {status}")
        try:
            return marshal.loads(b"".join(chunks))
        except (EOFError, ValueError, TypeError) as e:
            raise ChildFailed(f"unreadable answer: {e}") from None

    def __enter__(self) -> Child:
        return self

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Gives up on a child whose result was not read (the parent failed or was interrupted)."""
        if self._r is not None:
            os.close(self._r)
            self._r = None
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self._pid, 0)
            self._pid = None
