"""A client-side rate limiter: a token bucket shared by every call of one GalleryClient.

The bucket is kept as a "theoretical arrival time" (GCRA): each call reserves the next free slot
under a lock and then sleeps, outside the lock, until its slot comes. With burst 1 (the default)
consecutive calls are at least (1 + headroom)/qps apart, so `qps = 20` really means at most 20 calls
in any second, which is how the cloud counts (error 18 beyond it). The headroom (default 5%) is there
because the gallery counts calls by their *arrival* time: calls spaced exactly 1/qps apart when sent
arrive with network and scheduling jitter, and the local gallery answered 18 to such a client in
tests. 5% of a second's budget is 50 ms of slack per window.

`slow_down()` is called after an error 18: someone else (another process on the same key, or a
lower limit than configured) is using the budget, so the rate is halved for `slow_period` seconds;
each further error 18 halves it again, down to `min_qps`. Errors 18 that arrive together (several calls in
flight, refused in the same second) are one signal, not several: within `same_window` seconds of a
slow-down, another one changes nothing, so N workers do not divide the rate by 2**N. Without a configured
rate the first error 18 starts limiting at `unlimited_fallback` calls per second.
"""

from __future__ import annotations

import logging
import math
import threading

from imgsync.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("imgsync.gallery")


class RateLimiter:
    def __init__(
        self,
        qps: float | None,
        *,
        burst: int = 1,
        headroom: float = 0.05,
        clock: Clock = SYSTEM_CLOCK,
        slow_period: float = 60.0,
        min_qps: float = 0.1,
        unlimited_fallback: float = 10.0,
        same_window: float = 1.0,
    ) -> None:
        if qps is not None and (not qps > 0 or math.isinf(qps)):
            raise ValueError(f"qps must be a positive number or None (no limit), got {qps}")
        if burst < 1:
            raise ValueError(f"burst must be ≥ 1, got {burst}")
        if headroom < 0:
            raise ValueError(f"headroom must be ≥ 0, got {headroom}")
        self.qps = qps
        self.burst = burst
        self.headroom = headroom
        self._clock = clock
        self._slow_period = slow_period
        self._min_qps = min_qps
        self._fallback = unlimited_fallback
        self._same_window = same_window
        self._slowed_at = -math.inf
        self._lock = threading.Lock()  # the state below
        self._gate = threading.Lock()  # held by the caller waiting for the next slot
        self._tat = -math.inf  # theoretical arrival time of the next call (monotonic seconds)
        self._slowed_qps: float | None = None
        self._slowed_until = -math.inf

    def current_qps(self) -> float | None:
        """The rate in force now: the configured one, or a slowed one after error 18 (None: no limit)."""
        with self._lock:
            return self._rate(self._clock.monotonic())

    def _rate(self, now: float) -> float | None:
        if self._slowed_qps is not None and now < self._slowed_until:
            return self._slowed_qps
        return self.qps

    def acquire(self) -> float:
        """Wait for this call's slot; returns the time it was granted on the limiter's clock (monotonic).

        Callers wait their turn one at a time (the gate), and the next slot is counted from the moment
        this one was really granted: a thread that wakes late (a busy machine) pushes the schedule back
        instead of leaving the next call closer than 1/qps behind it. With several calls in flight,
        slots counted from the schedule alone let two calls reach the gallery 50 ms apart now and then,
        and a sliding one-second window (the cloud's, the local gallery's) answers that with error 18."""
        with self._gate:
            with self._lock:
                now = self._clock.monotonic()
                rate = self._rate(now)
                if rate is None:
                    return now
                interval = (1.0 + self.headroom) / rate
                tat = max(self._tat, now)
                slot = max(now, tat - (self.burst - 1) * interval)
            granted = slot
            if slot > now:
                self._clock.sleep(slot - now)
                granted = max(slot, self._clock.monotonic())
            with self._lock:
                self._tat = tat + interval + (granted - slot)  # woken late: the schedule moves with it
            return granted

    def slow_down(self) -> None:
        """Halve the rate in force (down to min_qps) for the next `slow_period` seconds."""
        with self._lock:
            now = self._clock.monotonic()
            if now - self._slowed_at < self._same_window:
                self._slowed_until = now + self._slow_period  # the same burst: keep the rate, extend the period
                return
            current = self._rate(now)
            base = self._fallback if current is None else current
            self._slowed_qps = max(self._min_qps, base / 2)
            self._slowed_until = now + self._slow_period
            self._slowed_at = now
            slowed = self._slowed_qps
        log.info(
            "gallery says too many calls per second (error 18): slowing to %.2f calls/s for %.0f s",
            slowed,
            self._slow_period,
        )
