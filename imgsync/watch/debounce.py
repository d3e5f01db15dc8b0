"""When the watch daemon looks at what: the pure state machine between watcher events and pipeline runs.

No I/O, no threads, no clock of its own: every method takes `now` (monotonic seconds), and
`next_wakeup()` says when something will next be due, so the daemon can sleep exactly that long and
the tests can drive it with plain numbers (tests/test_watch_debounce.py).

One MirrorQueue per mirror. A watcher event only *notes* a path dirty; a path is due

    once it has been quiet for `quiet` s          (about 1 s: a file being written keeps moving it on)
    or `max_delay` s after its first event        (a busy folder still makes progress)
    deletes: once quiet for `delete_quiet` s      (longer, so that the create half of a move that
                                                   arrives as delete + create lands in the same run)

and `take()` hands out a Work: the due paths, plus every delete still held (a move pairs up into an
update only when its old and new paths are in one run). A full reconcile (Work.paths = None) is due at
start, on a jittered timer (Syncthing's 3/4..5/4 of the interval), after an overflow (after a quiet
period, so a burst settles first), and when more than `max_paths` paths are dirty (a scan of the
whole tree is cheaper than a scope of thousands). A full scan covers every path noted before it
starts, so taking one clears them.

Paths the pipeline left pending (still being written, unreadable) come back through `finished(...,
retry=...)` with backoff; a new event for a path resets its backoff (it is news, not a failure).
After `max_attempts` retries without news a path is dropped: the periodic full scan finds it again.

`pause()` holds the queue (gallery unreachable, folder gone); `requeue()` puts back the work that
could not run so nothing noted is ever lost.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

INF = math.inf


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds. Defaults: Maestral's 1 s idle, Nextcloud's min age, Syncthing's hourly jittered rescan."""

    quiet: float = 1.0
    delete_quiet: float = 3.0
    max_delay: float = 10.0
    #: a file must be this old (by mtime) before it is uploaded; passed to the scan as min_age_ns
    min_age: float = 1.0
    full_scan_interval: float = 3600.0
    #: full scans when the watcher cannot be trusted (inotify watch limit hit, no watcher)
    fallback_scan_interval: float = 300.0
    jitter: float = 0.25
    max_paths: int = 10_000
    retry_base: float = 1.0
    retry_cap: float = 300.0
    max_attempts: int = 8

    def __post_init__(self) -> None:
        for name in ("quiet", "delete_quiet", "max_delay", "min_age", "retry_base", "retry_cap"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.full_scan_interval <= 0 or self.fallback_scan_interval <= 0:
            raise ValueError("scan intervals must be > 0")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.max_paths < 1 or self.max_attempts < 0:
            raise ValueError("max_paths must be ≥ 1 and max_attempts ≥ 0")


@dataclass(frozen=True, slots=True)
class Work:
    """What one pipeline run looks at: `paths` (relative POSIX) or None for the whole folder."""

    paths: frozenset[str] | None
    reason: str = ""

    @property
    def is_full(self) -> bool:
        return self.paths is None


class _Dirty:
    __slots__ = ("first", "last", "delete", "not_before")

    def __init__(self, first: float, delete: bool, not_before: float = 0.0) -> None:
        self.first = first
        self.last = first
        self.delete = delete
        self.not_before = not_before


class MirrorQueue:
    def __init__(self, timing: Timing, now: float, *, rng: random.Random | None = None, fallback: bool = False) -> None:
        self.timing = timing
        self._rng = rng or random.Random()
        self._dirty: dict[str, _Dirty] = {}
        self._heap: list[tuple[float, str]] = []  # (due, path); lazy: entries may be stale
        self._attempts: dict[str, int] = {}
        self._full_at: float | None = now  # a full reconcile at start
        self._full_reason = "start"
        self._fallback = fallback
        self._periodic_at = now + self._interval()
        self._paused_until: float | None = None
        self.pause_reason: str | None = None

    # ------------------------------------------------------------------ input

    def note(self, now: float, path: str, *, delete: bool = False) -> None:
        """A watcher event touched `path` (relative POSIX; "" or "." is the whole folder)."""
        if path in ("", "."):
            self.request_full(now + self.timing.quiet, "the folder itself changed")
            return
        if self._full_at is not None and self._full_at <= now + self.timing.quiet:
            return  # a full scan is about to run and will see it
        self._attempts.pop(path, None)  # news, not a failure: no backoff
        d = self._dirty.get(path)
        if d is None:
            if len(self._dirty) >= self.timing.max_paths:
                self._dirty.clear()
                self._heap.clear()
                self.request_full(now + self.timing.quiet, f"more than {self.timing.max_paths} changed paths")
                return
            d = self._dirty[path] = _Dirty(now, delete)
            heapq.heappush(self._heap, (self._due(d), path))
            return
        before = self._due(d)
        d.last = max(d.last, now)
        d.delete = delete  # the latest event says what the path is now
        d.not_before = 0.0
        after = self._due(d)
        if after < before:  # the lazy heap only copes with due times that move later
            heapq.heappush(self._heap, (after, path))

    def request_full(self, at: float, reason: str) -> None:
        """A full reconcile at `at` (overflow, watcher failure, folder back, config reloaded)."""
        if self._full_at is None or at < self._full_at:
            self._full_at, self._full_reason = at, reason

    def set_fallback(self, fallback: bool, now: float) -> None:
        """Fallback = the watcher cannot be trusted: full scans every fallback_scan_interval."""
        if fallback != self._fallback:
            self._fallback = fallback
            self._periodic_at = min(self._periodic_at, now + self._interval())

    def set_timing(self, timing: Timing, now: float) -> None:
        self.timing = timing
        self._periodic_at = min(self._periodic_at, now + self._interval())
        self._heap = [(self._due(d), p) for p, d in self._dirty.items()]
        heapq.heapify(self._heap)

    def pause(self, until: float, reason: str) -> None:
        """Hand out no work before `until` (math.inf: until resume()). The queue is kept."""
        self._paused_until, self.pause_reason = until, reason

    def resume(self) -> None:
        self._paused_until, self.pause_reason = None, None

    # ------------------------------------------------------------------ output

    def paused(self, now: float) -> bool:
        return self._paused_until is not None and now < self._paused_until

    def take(self, now: float) -> Work | None:
        """The work due at `now`, removed from the queue; None if nothing is due (or paused)."""
        if self.paused(now):
            return None
        if self._paused_until is not None:
            self.resume()  # a timed pause ran out
        if (self._full_at is not None and self._full_at <= now) or self._periodic_at <= now:
            reason = self._full_reason if self._full_at is not None and self._full_at <= now else "periodic"
            self._full_at = None
            self._periodic_at = now + self._interval()
            self._dirty.clear()
            self._heap.clear()
            return Work(None, reason)
        due: set[str] = set()
        while self._heap:
            at = self._peek()
            if at is None or at > now:
                break
            _, path = heapq.heappop(self._heap)
            if path in self._dirty:
                due.add(path)
        if not due:
            return None
        due.update(p for p, d in self._dirty.items() if d.delete)  # held deletes pair with these creates
        for p in due:
            del self._dirty[p]
        return Work(frozenset(due), "changed")

    def finished(self, now: float, work: Work, retry: Iterable[str] = ()) -> None:
        """`work` ran; `retry` are the paths it left pending (retried with backoff unless news came)."""
        retry = set(retry)
        if work.paths is not None:
            for p in work.paths - retry:
                self._attempts.pop(p, None)
        for p in retry:
            n = self._attempts.get(p, 0) + 1
            if n > self.timing.max_attempts:
                self._attempts.pop(p, None)
                continue  # the periodic full scan will find it again
            if p in self._dirty:
                continue  # an event came during the run: its own quiet period applies
            self._attempts[p] = n
            delay = min(self.timing.retry_cap, self.timing.retry_base * 2 ** (n - 1))
            d = self._dirty[p] = _Dirty(now, False, not_before=now + delay)
            heapq.heappush(self._heap, (self._due(d), p))

    def requeue(self, work: Work, now: float) -> None:
        """Put back work that could not run (gallery down, folder gone): due again at once."""
        if work.paths is None:
            self.request_full(now, work.reason or "retry")
            return
        for p in work.paths:
            if p not in self._dirty:
                d = self._dirty[p] = _Dirty(now - self.timing.max_delay, False)
                heapq.heappush(self._heap, (self._due(d), p))

    def next_wakeup(self) -> float:
        """When take() may next return work (math.inf: only an event or resume() can change that)."""
        if self._paused_until is not None:
            return self._paused_until
        candidates = [self._periodic_at]
        if self._full_at is not None:
            candidates.append(self._full_at)
        at = self._peek()
        if at is not None:
            candidates.append(at)
        return min(candidates)

    def __len__(self) -> int:
        """Paths waiting (a pending full scan counts as one)."""
        return len(self._dirty) + (1 if self._full_at is not None else 0)

    @property
    def full_pending(self) -> bool:
        return self._full_at is not None

    # ------------------------------------------------------------------ internals

    def _due(self, d: _Dirty) -> float:
        t = self.timing
        settle = d.last + (t.delete_quiet if d.delete else t.quiet)
        return max(d.not_before, min(settle, d.first + max(t.max_delay, 0.0)))

    def _peek(self) -> float | None:
        """The earliest real due time, fixing stale heap entries on the way."""
        heap = self._heap
        while heap:
            at, path = heap[0]
            d = self._dirty.get(path)
            if d is None:
                heapq.heappop(heap)
                continue
            real = self._due(d)
            if real > at:
                heapq.heapreplace(heap, (real, path))
                continue
            return at
        return None

    def _interval(self) -> float:
        t = self.timing
        base = t.fallback_scan_interval if self._fallback else t.full_scan_interval
        return base * self._rng.uniform(1 - t.jitter, 1 + t.jitter)


class Backoff:
    """Exponential backoff for a resource that failed (the gallery): how long to hold the calls."""

    def __init__(self, base: float = 5.0, cap: float = 600.0) -> None:
        self.base, self.cap = base, cap
        self.failures = 0

    def fail(self, now: float, *, base: float | None = None) -> float:
        """One more failure at `now`: the time to try again."""
        self.failures += 1
        b = self.base if base is None else base
        return now + min(self.cap, b * 2 ** min(self.failures - 1, 30))

    def reset(self) -> None:
        self.failures = 0
