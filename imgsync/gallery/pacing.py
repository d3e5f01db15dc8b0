"""How many calls to keep in flight so that a gallery's rate cap, not its latency, sets the pace.

A call that takes L seconds, sent one at a time, gives 1/L calls per second whatever the cap: at the
cloud's 250–1000 ms per call that is 10–40 % of a 10 QPS cap. By Little's law, reaching a rate R with
calls of latency L needs R × L calls in flight; the token bucket (ratelimit.py) then spaces their
starts, so more in flight than needed only waits in the bucket, it does not go faster than the cap.
The margin covers the latency's spread; the ceiling bounds threads and memory (each in-flight add
holds one image of at most 4 MB, base64 encoded).
"""

from __future__ import annotations

import math
import threading

#: Never more than this many calls in flight, whatever the cap and the latency.
CEILING = 32
#: With no rate cap (a local gallery): enough to overlap the client's work (reading, hashing, journal
#: commits) with the gallery's feature extraction, not so many that they fight over a small machine's cores.
UNCAPPED = 4
#: The latency assumed before any call was timed (a cloud call's typical order of magnitude).
ASSUMED_LATENCY_S = 0.5
#: Head-room over R × L: latencies vary, and a call's slot comes only when the one before has gone.
MARGIN = 1.25


def calls_in_flight(rate: float | None, latency_s: float | None, *, ceiling: int = CEILING) -> int:
    """Calls to keep in flight for `rate` calls/s (None: no cap) at `latency_s` s per call (None: unknown)."""
    if rate is None:
        return min(UNCAPPED, ceiling)
    latency = ASSUMED_LATENCY_S if latency_s is None else latency_s
    return max(2, min(ceiling, math.ceil(rate * latency * MARGIN) + 1))


class LatencyMeter:
    """The round-trip time of a gallery's calls, as an exponentially weighted mean (thread-safe).

    Only the request itself is timed (not the wait for a rate-limit slot, which would feed back:
    more calls in flight → longer waits → more calls in flight)."""

    def __init__(self, weight: float = 0.2) -> None:
        self._weight = weight
        self._lock = threading.Lock()
        self._mean: float | None = None

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._mean = seconds if self._mean is None else self._mean + self._weight * (seconds - self._mean)

    @property
    def mean(self) -> float | None:
        with self._lock:
            return self._mean
