"""When and how long to wait before trying a gallery call again.

Only transient failures are retried: GalleryUnavailableError (network down, timeouts, 5xx, non-JSON
answers, codes 1/2/4/282000/216630) and its subclass GalleryRateError (code 18). Everything else
(auth, quota, a refused request) fails at once: asking again would get the same answer.

Delays use exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
Jitter"): before retry n (n = 1, 2, ...) sleep uniform(0, min(cap, base * 2**(n-1))). Full jitter
spreads out clients that failed together. A rate error waits at least `rate_floor` seconds, since
the cloud counts QPS per second and a near-zero jittered delay would only earn another error 18.

Retrying `add` after a timeout is allowed although add is not idempotent: if the first request did
reach the gallery, the retry is answered with 216681 "item has existed" and the existing cont_sign,
which the client raises as GalleryDuplicateError(cont_sign=...) and the reconciler adopts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from imgsync.clock import Clock
from imgsync.errors import GalleryError, GalleryRateError, GalleryUnavailableError

log = logging.getLogger("imgsync.gallery")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    #: Total tries of one call, the first included (1 = never retry).
    attempts: int = 5
    #: Upper bound of the first delay, in seconds; it doubles with each retry.
    base: float = 0.5
    #: No delay is ever longer than this.
    cap: float = 30.0
    #: The least wait after a rate error (code 18).
    rate_floor: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be ≥ 1, got {self.attempts}")
        if self.base < 0 or self.cap < 0 or self.rate_floor < 0:
            raise ValueError("base, cap and rate_floor must be ≥ 0")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """After try number `attempt` (1-based) failed with `error`: try again?"""
        return isinstance(error, GalleryUnavailableError) and attempt < self.attempts

    def bound(self, retry: int) -> float:
        """The largest delay before retry number `retry` (1-based)."""
        # min() before the power would overflow for absurd retry counts; 2**60 is plenty.
        return min(self.cap, self.base * 2 ** min(retry - 1, 60))

    def delay(self, retry: int, error: BaseException, rng: random.Random) -> float:
        """Seconds to sleep before retry number `retry` (1-based) after `error`."""
        wait = rng.uniform(0.0, self.bound(retry))
        if isinstance(error, GalleryRateError):
            wait = max(wait, min(self.rate_floor, self.cap))
        return wait


NO_RETRY = RetryPolicy(attempts=1)


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    *,
    what: str = "gallery call",
    on_error: Callable[[GalleryError, bool], None] | None = None,
    give_up: Callable[[], bool] | None = None,
) -> T:
    """Call `fn` until it succeeds, raises a non-transient error, or the policy's tries are used up.

    `on_error(error, will_retry)` sees every GalleryError (the client slows its rate limiter on error 18
    and counts retries with it).
    `give_up()` true (a run shutting down): no further try, and a backoff under way ends within
    GIVE_UP_POLL seconds; the caller gets the last error, as when the tries are used up.
    The last error is raised as is.
    """
    attempt = 1
    while True:
        try:
            return fn()
        except GalleryError as e:
            retry = policy.should_retry(e, attempt) and not (give_up is not None and give_up())
            if on_error is not None:
                on_error(e, retry)
            if not retry:
                raise
            wait = policy.delay(attempt, e, rng)
            log.info("%s: %s; retrying in %.2f s (try %d of %d)", what, e, wait, attempt + 1, policy.attempts)
            if give_up is None:
                clock.sleep(wait)
            elif not _sleep_unless(clock, wait, give_up):
                log.info("%s: not retried: shutting down", what)
                raise
            attempt += 1


#: How often a backoff checks whether its run is shutting down.
GIVE_UP_POLL = 0.25


def _sleep_unless(clock: Clock, seconds: float, give_up: Callable[[], bool]) -> bool:
    """Sleep `seconds` in slices, checking give_up() between them; False if it said to stop."""
    end = clock.monotonic() + seconds
    while (left := end - clock.monotonic()) > 0:
        if give_up():
            return False
        clock.sleep(min(left, GIVE_UP_POLL))
    return not give_up()
