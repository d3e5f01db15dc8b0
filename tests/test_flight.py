"""flight.drive: steps on one thread, their calls on workers, at most limit() under way, orderly stops.
Calls here are plain functions that wait on events (no gallery): what is tested is the scheduling."""

from __future__ import annotations

import threading

import pytest

from imgsync.flight import Step, drive
from imgsync.gallery.pacing import CEILING, UNCAPPED, LatencyMeter, calls_in_flight


class Stop(Exception):
    pass


class Calls:
    """Counts calls under way; each call waits until `release` is set (or returns at once)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.release = threading.Event()
        self.release.set()
        self.began = threading.Semaphore(0)  # one release per call that started running

    def call(self, value: object = None, error: BaseException | None = None):
        def run():
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            self.began.release()
            try:
                self.release.wait(30)
                if error is not None:
                    raise error
                return value
            finally:
                with self.lock:
                    self.now -= 1

        return run


def test_steps_get_their_answers_and_errors_back_in_their_own_order():
    calls, log = Calls(), []

    def step(i: int) -> Step:
        a = yield calls.call(i * 10)
        try:
            yield calls.call(error=ValueError(f"no {i}"))
        except ValueError as e:
            log.append((i, a, str(e)))
        return i

    done: list[int] = []
    assert drive((step(i) for i in range(5)), limit=lambda: 3, on_done=done.append) is None
    assert sorted(log) == [(i, i * 10, f"no {i}") for i in range(5)]
    assert sorted(done) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("limit", [1, 2, 5, 14, 32])
def test_never_more_under_way_than_the_limit_and_the_limit_is_reached(limit):
    calls = Calls()
    calls.release.clear()
    under_way = [0, 0]  # now, most

    def step() -> Step:
        under_way[0] += 1
        under_way[1] = max(under_way[1], under_way[0])
        yield calls.call()
        under_way[0] -= 1
        return 1

    reached: list[bool] = []

    def release_when_full():
        # all `limit` first steps started, and their calls running at once, before any could finish
        reached.append(all(calls.began.acquire(timeout=30) for _ in range(limit)))
        calls.release.set()

    t = threading.Thread(target=release_when_full)
    t.start()
    drive((step() for _ in range(limit + 10)), limit=lambda: limit)
    t.join()
    assert reached == [True]
    assert under_way == [0, limit]
    assert calls.most == limit and calls.now == 0


def test_a_stop_starts_nothing_new_and_lets_the_ones_under_way_finish():
    calls, finished, started = Calls(), [], []
    calls.release.clear()

    def step(i: int) -> Step:
        started.append(i)
        if i == 0:
            try:
                yield lambda: (_ for _ in ()).throw(Stop("quota"))  # answered at once, the others wait
            except Stop:
                calls.release.set()  # the others may finish from here on: after the stop is seen
                raise
        yield calls.call()
        finished.append(i)
        return 1

    stop = drive((step(i) for i in range(10)), limit=lambda: 3, stops=(Stop,))
    assert isinstance(stop, Stop)
    assert sorted(started) == [0, 1, 2] and sorted(finished) == [1, 2]


def test_a_stop_from_on_done_is_returned_after_the_others_finish():
    calls, finished = Calls(), []

    def step(i: int) -> Step:
        yield calls.call()
        finished.append(i)
        return 1

    def on_done(n: int) -> None:
        if len(finished) >= 2:
            raise Stop("asked to stop")

    stop = drive((step(i) for i in range(20)), limit=lambda: 4, on_done=on_done, stops=(Stop,))
    assert isinstance(stop, Stop) and 2 <= len(finished) <= 2 + 3


def test_anything_else_waits_for_the_calls_sent_then_propagates_without_recording():
    calls, recorded = Calls(), []

    class Crash(BaseException):
        pass

    def step(i: int) -> Step:
        yield calls.call(error=Crash() if i == 1 else None)
        recorded.append(i)
        return 1

    with pytest.raises(Crash):
        drive((step(i) for i in range(8)), limit=lambda: 4, stops=(Stop,))
    assert calls.now == 0  # nothing still running behind the caller's back
    assert len(recorded) < 8


def test_calls_in_flight_follows_rate_times_latency_within_bounds():
    assert calls_in_flight(None, 1.0) == UNCAPPED
    assert calls_in_flight(10, 0.02) == 2
    assert calls_in_flight(10, 0.25) == 5
    assert calls_in_flight(10, 1.0) == 14
    assert calls_in_flight(10, None) == calls_in_flight(10, 0.5)
    assert calls_in_flight(1000, 5.0) == CEILING


def test_latency_meter_is_a_moving_mean():
    m = LatencyMeter(weight=0.5)
    assert m.mean is None
    m.observe(1.0)
    m.observe(0.0)
    assert m.mean == 0.5


def test_the_client_keeps_as_many_in_flight_as_configured_else_what_its_cap_and_latency_need():
    from imgsync.gallery.client import GalleryClient

    with GalleryClient("http://127.0.0.1:9", "k", "s", qps=10, in_flight=3) as fixed:
        assert fixed.calls_in_flight() == 3
    with GalleryClient("http://127.0.0.1:9", "k", "s", qps=10) as auto:
        assert auto.calls_in_flight() == calls_in_flight(10, None)
        for _ in range(50):
            auto.latency.observe(1.0)  # calls that take a second, as far-away clouds' do
        assert auto.calls_in_flight() == calls_in_flight(10, 1.0) > 10
    with GalleryClient("http://127.0.0.1:9", "k", "s") as uncapped:
        assert uncapped.calls_in_flight() == UNCAPPED
