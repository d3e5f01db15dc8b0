"""Per-API-key QPS limit: a sliding window over the injected clock (error 18 when exceeded).

`qps` calls are allowed in any 1-second window. A fractional rate below 1 widens the window instead
(qps=0.5 → one call per 2 s), so every rate admits at least one call.
"""

from __future__ import annotations

import math
import threading
from collections import deque

from imgsync.localgallery.clock import SYSTEM_CLOCK, Clock


class RateLimiter:
    def __init__(self, qps: float, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if not qps > 0 or math.isinf(qps):
            raise ValueError(f"qps must be a positive number, got {qps}")
        self._window = max(1.0, 1.0 / qps)
        self._limit = max(1, math.floor(qps * self._window + 1e-9))
        self._clock = clock
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Record a call for `key` and say whether it is within the limit. Refused calls are not
        counted, so a client that backs off gets through once the window has moved on."""
        now = self._clock.monotonic()
        with self._lock:
            calls = self._calls.setdefault(key, deque())
            while calls and calls[0] <= now - self._window:
                calls.popleft()
            if len(calls) >= self._limit:
                return False
            calls.append(now)
            return True
