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
import struct
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


class Tickets:
    """Numbers 0..n-1 handed out one at a time to this process and the children it forks afterwards: a
    work queue without locks. They wait in a pipe, written whole before anyone takes one and closed for
    writing, so a take is one read of a 4-byte record (the kernel serialises reads of a pipe, and every
    read takes a whole record) and the end of the queue is the end of the pipe."""

    _RECORD = struct.Struct("=I")
    #: What any pipe holds without a reader (one page: Linux gives new pipes a single page once a user's
    #: pipe buffers pass their soft limit): more tickets could block the writer for good.
    MAX = 4096 // _RECORD.size

    def __init__(self, n: int) -> None:
        if not 0 <= n <= self.MAX:
            raise ValueError(f"at most {self.MAX} tickets, asked for {n}")
        self._r, w = os.pipe()
        try:
            data = b"".join(self._RECORD.pack(i) for i in range(n))
            view = memoryview(data)
            while view:
                view = view[os.write(w, view) :]
        finally:
            os.close(w)

    def take(self) -> int | None:
        """The next number, or None once all are taken."""
        record = os.read(self._r, self._RECORD.size)
        return self._RECORD.unpack(record)[0] if record else None

    def __enter__(self) -> Tickets:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._r)
