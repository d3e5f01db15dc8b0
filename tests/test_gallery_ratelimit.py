"""Pacing: the client's token bucket, the retry policy, and both against a local gallery that enforces a QPS
limit. Time is a FakeClock wherever possible (shared by client and server: the client's sleeps move the
server's clock too), so nothing here sleeps for real except the one real-clock check."""

from __future__ import annotations

import random
import threading
from itertools import pairwise
from pathlib import Path

import pytest

from conftest import make_image
from imgsync.clock import FakeClock
from imgsync.errors import (
    GalleryAuthError,
    GalleryQuotaError,
    GalleryRateError,
    GalleryRejectedError,
    GalleryUnavailableError,
)
from imgsync.gallery.client import GalleryClient
from imgsync.gallery.ratelimit import RateLimiter
from imgsync.gallery.retry import GIVE_UP_POLL, RetryPolicy, call_with_retry

# --------------------------------------------------------------------------- the token bucket


@pytest.mark.parametrize(("qps", "n"), [(20.0, 41), (2.0, 7), (0.5, 4)])
def test_n_calls_take_at_least_n_minus_1_intervals(qps: float, n: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(qps, clock=clock)
    start = clock.monotonic()
    slots = [limiter.acquire() for _ in range(n)]
    assert clock.monotonic() - start >= (n - 1) / qps - 1e-9
    assert slots[0] == start  # the first call does not wait
    assert all(b - a >= 1 / qps - 1e-9 for a, b in pairwise(slots))


def test_at_most_qps_calls_in_any_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock)
    slots = [limiter.acquire() for _ in range(100)]
    for i, t in enumerate(slots):
        assert sum(1 for s in slots[i:] if s < t + 1.0) <= 20


def test_burst_allows_that_many_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, burst=3, headroom=0, clock=clock)
    slots = [limiter.acquire() for _ in range(5)]
    assert slots[:3] == [slots[0]] * 3
    assert slots[3] == slots[0] + 1 and slots[4] == slots[0] + 2


def test_idle_time_is_not_banked_beyond_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock)
    limiter.acquire()
    clock.advance(100)
    a, b = limiter.acquire(), limiter.acquire()
    assert b - a == pytest.approx(0.5 * 1.05)  # the second waits: nothing saved up from the idle time


def test_no_limit_never_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock)
    for _ in range(50):
        limiter.acquire()
    assert clock.sleeps == []


def test_slow_down_halves_for_a_while_then_recovers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(8, clock=clock, slow_period=60, headroom=0)
    limiter.slow_down()
    assert limiter.current_qps() == 4
    clock.advance(1.5)  # a later error 18: the rate in force is still too high
    limiter.slow_down()
    assert limiter.current_qps() == 2
    a, b = limiter.acquire(), limiter.acquire()
    assert b - a == pytest.approx(0.5)
    clock.advance(61)
    assert limiter.current_qps() == 8


def test_errors_18_of_one_burst_slow_down_once() -> None:
    """Several calls in flight refused in the same second are one signal: the rate halves once, not per call."""
    clock = FakeClock()
    limiter = RateLimiter(8, clock=clock, slow_period=60, headroom=0)
    for _ in range(6):
        limiter.slow_down()
        clock.advance(0.1)
    assert limiter.current_qps() == 4
    clock.advance(59.5)  # the burst's last error extended the slow period
    assert limiter.current_qps() == 4
    clock.advance(1)
    assert limiter.current_qps() == 8


def test_slow_down_without_a_limit_starts_limiting() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, unlimited_fallback=10, min_qps=1)
    limiter.slow_down()
    assert limiter.current_qps() == 5
    for _ in range(5):
        clock.advance(1.5)
        limiter.slow_down()
    assert limiter.current_qps() == 1  # never below min_qps


def test_a_late_wake_up_moves_the_schedule_instead_of_crowding_the_next_call() -> None:
    """A busy machine wakes a waiting thread 60 ms late: the next call still leaves a full interval after
    it (slots counted from the schedule alone would send it 40 ms later, and a sliding window refuses)."""

    class LateClock(FakeClock):
        def __init__(self) -> None:
            super().__init__()
            self.late = [0.0, 0.06, 0.0, 0.03, 0.0]

        def sleep(self, seconds: float) -> None:
            super().sleep(seconds + (self.late.pop(0) if self.late else 0.0))

    clock = LateClock()
    limiter = RateLimiter(10, headroom=0, clock=clock)
    sent = []
    for _ in range(7):
        limiter.acquire()
        sent.append(clock.monotonic())
    assert all(b - a >= 0.1 - 1e-9 for a, b in pairwise(sent)), sent


def test_bad_rates_are_refused() -> None:
    for qps in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            RateLimiter(qps)
    with pytest.raises(ValueError):
        RateLimiter(1, burst=0)
    with pytest.raises(ValueError):
        RateLimiter(1, headroom=-0.1)


def test_threads_share_one_bucket() -> None:
    """8 real threads × 25 calls on a fake clock: every granted slot is distinct and 1/qps apart."""
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    slots: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            s = limiter.acquire()
            with lock:
                slots.append(s)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    assert len(slots) == 200
    assert all(b - a >= 0.1 - 1e-9 for a, b in pairwise(slots))


# --------------------------------------------------------------------------- the retry policy (pure)


def test_delays_grow_are_capped_and_jittered_within_bounds() -> None:
    policy = RetryPolicy(attempts=20, base=0.5, cap=8.0)
    assert [policy.bound(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    rng = random.Random(7)
    err = GalleryUnavailableError("x")
    for n in range(1, 12):
        delays = [policy.delay(n, err, rng) for _ in range(200)]
        assert all(0.0 <= d <= policy.bound(n) for d in delays)
        assert len(set(delays)) > 150  # jittered, not fixed
    assert policy.bound(10_000) == 8.0  # no overflow for absurd retry counts


def test_rate_errors_wait_at_least_the_floor() -> None:
    policy = RetryPolicy(base=0.01, cap=30, rate_floor=1.0)
    rng = random.Random(3)
    assert all(policy.delay(1, GalleryRateError("x", code=18), rng) >= 1.0 for _ in range(100))


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (GalleryUnavailableError("down"), True),
        (GalleryRateError("qps", code=18), True),
        (GalleryAuthError("auth"), False),
        (GalleryQuotaError("quota"), False),
        (GalleryRejectedError("no"), False),
    ],
)
def test_only_transient_errors_are_retried(error: Exception, retried: bool) -> None:
    clock = FakeClock()
    calls = []

    def fail() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        call_with_retry(fail, RetryPolicy(attempts=4), clock, random.Random(0))
    assert len(calls) == (4 if retried else 1)
    assert len(clock.sleeps) == (3 if retried else 0)


def test_give_up_ends_a_backoff_under_way_and_tries_no_more() -> None:
    """A run shutting down: the backoff it is in ends at the next slice, and the last error is raised."""
    clock = FakeClock()
    calls: list[int] = []

    def fail() -> None:
        calls.append(1)
        raise GalleryUnavailableError("down")

    stop_at = clock.monotonic() + 1.0  # shutting down one second into the first backoff (of up to 30 s)
    with pytest.raises(GalleryUnavailableError):
        call_with_retry(
            fail,
            RetryPolicy(attempts=5, base=30.0, cap=30.0),
            clock,
            random.Random(0),
            give_up=lambda: clock.monotonic() >= stop_at,
        )
    assert len(calls) == 1
    assert 1.0 <= sum(clock.sleeps) <= 1.0 + GIVE_UP_POLL and max(clock.sleeps) <= GIVE_UP_POLL
    calls.clear()
    with pytest.raises(GalleryUnavailableError):  # already shutting down: not even one backoff
        call_with_retry(fail, RetryPolicy(attempts=5), clock, random.Random(0), give_up=lambda: True)
    assert len(calls) == 1


def test_success_after_transient_failures_returns_the_value() -> None:
    clock = FakeClock()
    outcomes = iter([GalleryUnavailableError("a"), GalleryUnavailableError("b"), "ok"])

    def step() -> str:
        o = next(outcomes)
        if isinstance(o, Exception):
            raise o
        return o

    seen: list[bool] = []
    assert (
        call_with_retry(
            step,
            RetryPolicy(attempts=5, base=1, cap=10),
            clock,
            random.Random(0),
            on_error=lambda e, again: seen.append(again),
        )
        == "ok"
    )
    assert seen == [True, True]
    assert len(clock.sleeps) == 2 and clock.sleeps[0] <= 1 and clock.sleeps[1] <= 2


# --------------------------------------------------------------------------- against a QPS-limited gallery


def _server(tmp_path: Path, qps: float, clock: FakeClock | None = None):  # type: ignore[no-untyped-def]
    from imgsync.localgallery.server import start_in_thread

    kwargs = {"clock": clock} if clock is not None else {}
    return start_in_thread(tmp_path / "g", keys=[("qps-key", "qps-secret")], qps=qps, **kwargs)


def test_hammering_without_a_limiter_gets_rate_errors_then_succeeds(tmp_path: Path) -> None:
    clock = FakeClock()  # one clock for both: the client's backoff sleeps move the server's window
    server = _server(tmp_path, qps=2, clock=clock)
    image = make_image(11)
    try:
        with GalleryClient(
            server.url, "qps-key", "qps-secret", clock=clock, rng=random.Random(2), retry=RetryPolicy(attempts=6)
        ) as client:
            results = [client.search("same_hq", image=image) for _ in range(8)]
            stats = client.stats
    finally:
        server.stop()
    assert len(results) == 8  # every call finally succeeded
    assert stats.rate_errors >= 1  # ... after the server said 18
    assert stats.retries == stats.rate_errors
    assert any(s >= 1.0 for s in clock.sleeps)  # rate errors back off at least the floor


def test_limiter_at_the_servers_rate_gets_no_rate_errors(tmp_path: Path) -> None:
    clock = FakeClock()
    server = _server(tmp_path, qps=2, clock=clock)
    image = make_image(12)
    try:
        with GalleryClient(
            server.url, "qps-key", "qps-secret", qps=2, clock=clock, retry=RetryPolicy(attempts=1)
        ) as client:  # no retries: an 18 would fail the test
            for _ in range(9):
                client.search("same_hq", image=image)
            assert client.stats.rate_errors == 0 and client.stats.requests == 9
    finally:
        server.stop()


def test_limiter_at_the_servers_rate_on_real_clocks(tmp_path: Path) -> None:
    """The same with real time on both sides (network jitter included): ~2 s."""
    server = _server(tmp_path, qps=5)
    image = make_image(13)
    try:
        with GalleryClient(server.url, "qps-key", "qps-secret", qps=5, retry=RetryPolicy(attempts=1)) as client:
            for _ in range(11):
                client.search("same_hq", image=image)
            assert client.stats.rate_errors == 0
    finally:
        server.stop()
