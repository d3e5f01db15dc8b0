"""One reconcile/watch at a time per state dir: an advisory flock on STATE_DIR/imgsync.lock.

flock is released by the kernel when the holder's file descriptor is closed, which happens however the
process ends (exit, exception, kill -9, OOM), so a crash never leaves a stale lock to clean up by hand.
The file stays in place (removing it would let two processes lock two different inodes); its text
(pid, start time) only serves the "who holds it" message. The descriptor is not inherited by child
processes (Python opens files close-on-exec), so a subprocess cannot keep the lock alive.

flock is reliable on local filesystems; on NFS it may not exclude other machines: keep the state dir local.
"""

from __future__ import annotations

import fcntl
import os
from datetime import datetime
from pathlib import Path
from types import TracebackType

from imgsync.clock import SYSTEM_CLOCK, Clock
from imgsync.errors import DISK_FULL_ERRNOS, LockHeldError, ManifestError, disk_full
from imgsync.statedir import LOCK as LOCK_NAME


class StateLock:
    """Non-blocking exclusive lock on a state dir. Use as a context manager (or acquire()/release())."""

    def __init__(self, state_dir: Path, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_NAME
        self._clock = clock
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError("this StateLock is already held")
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ManifestError(f"cannot create the lock file {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeldError(f"another imgsync ({holder}) holds {self.state_dir}; wait for it or stop it") from None
        except OSError as e:
            os.close(fd)
            raise ManifestError(f"cannot lock {self.path}: {e.strerror}") from None
        started = datetime.fromtimestamp(self._clock.time()).astimezone().isoformat(timespec="seconds")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}\nstarted {started}\n".encode(), 0)
        except OSError as e:
            os.close(fd)  # drops the lock: a run that could not write this could not write the manifest
            if e.errno in DISK_FULL_ERRNOS:
                raise disk_full(self.state_dir) from None
            raise ManifestError(f"cannot write the lock file {self.path}: {e.strerror}") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no stale "who" for the next reader; the lock itself goes with the close
        finally:
            os.close(fd)

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """ "pid N, started T" from the lock file's text; the holder may not have written it yet."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    fields = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    pid, started = fields.get("pid"), fields.get("started")
    if pid and started:
        return f"pid {pid}, started {started}"
    return f"pid {pid}" if pid else "pid unknown"
