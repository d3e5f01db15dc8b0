"""Warnings caught per thread (Pillow's, while it reads a picture).

`warnings.catch_warnings` swaps process-wide state (the filter list and `warnings.showwarning`) and
puts it back on exit, so two threads inside it at once undo each other: one thread's warnings land in
the other's list, and the last to leave can restore the other's recorder as `showwarning` (every later
warning of the process lost) or its "always" filter. imgsync reads pictures on several threads of one
process: the scan beside the calls in flight, the embedded gallery's request threads, the console's
thumbnails. So the process-wide part here is installed once and then left alone: a filter that lets
every warning Pillow raises through each time (not once per place, as the default would), and a
`showwarning` that hands each warning to the capture open on the thread that raised it, or to the
`showwarning` that was there before when that thread has none open.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Pillow warns from its own modules (stacklevel 1): their names start so.
PILLOW_MODULES = r"PIL\."

_local = threading.local()
_install_lock = threading.Lock()


@contextmanager
def caught_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """The warnings raised on this thread inside the block, in order (nested blocks: the innermost)."""
    _install()
    outer = getattr(_local, "sink", None)
    sink: list[warnings.WarningMessage] = []
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = outer


def _show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
    else:
        _show.previous(message, category, filename, lineno, file, line)  # type: ignore[attr-defined]


_show.previous = warnings.showwarning  # type: ignore[attr-defined]


def _install() -> None:
    """Once, and again whenever someone else (a test runner's own catch_warnings) has put its state back."""
    if warnings.showwarning is _show:
        return
    with _install_lock:
        if warnings.showwarning is not _show:
            _show.previous = warnings.showwarning  # type: ignore[attr-defined]
            warnings.filterwarnings("always", module=PILLOW_MODULES)
            warnings.showwarning = _show
