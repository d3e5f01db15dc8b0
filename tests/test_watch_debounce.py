"""The watch daemon's debounce/queue state machine: pure, driven by plain timestamps (no sleeping)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgsync.watch.debounce import Backoff, MirrorQueue, Timing, Work

T = Timing(
    quiet=1.0,
    delete_quiet=3.0,
    max_delay=10.0,
    full_scan_interval=3600.0,
    jitter=0.0,
    retry_base=1.0,
    retry_cap=8.0,
    max_attempts=3,
    max_paths=100,
)


def started(timing: Timing = T, now: float = 0.0) -> MirrorQueue:
    """A queue whose start-up full scan has been taken."""
    q = MirrorQueue(timing, now, rng=random.Random(1))
    assert q.take(now) == Work(None, "start")
    return q


def test_first_work_is_a_full_scan_at_start():
    q = MirrorQueue(T, 100.0, rng=random.Random(1))
    assert q.next_wakeup() == 100.0
    work = q.take(100.0)
    assert work is not None and work.is_full and work.reason == "start"
    assert q.take(100.0) is None


def test_a_path_is_due_after_one_quiet_second():
    q = started()
    q.note(5.0, "a.jpg")
    assert q.next_wakeup() == 6.0
    assert q.take(5.9) is None
    assert q.take(6.0) == Work(frozenset({"a.jpg"}), "changed")
    assert len(q) == 0


def test_each_event_restarts_the_quiet_period():
    q = started()
    for t in (1.0, 1.5, 2.0, 2.7):
        q.note(t, "a.jpg")
    assert q.take(3.6) is None
    assert q.next_wakeup() == pytest.approx(3.7)
    assert q.take(3.7).paths == {"a.jpg"}


def test_a_path_that_never_goes_quiet_is_due_after_max_delay():
    q = started()
    t = 1.0
    while t < 11.0:
        q.note(t, "busy.jpg")
        assert q.take(t) is None or t >= 11.0
        t += 0.5
    assert q.take(11.0).paths == {"busy.jpg"}


def test_deletes_are_held_longer_and_join_the_next_batch_so_a_move_pairs_up():
    q = started()
    q.note(1.0, "old.jpg", delete=True)
    assert q.take(2.5) is None  # a create would be due by now; a delete waits
    q.note(1.2, "new.jpg")
    assert q.take(2.2).paths == {"old.jpg", "new.jpg"}  # the held delete rides along with the create


def test_a_lone_delete_is_due_after_delete_quiet():
    q = started()
    q.note(1.0, "gone.jpg", delete=True)
    assert q.next_wakeup() == 4.0
    assert q.take(4.0).paths == {"gone.jpg"}


def test_a_delete_then_create_of_the_same_path_is_a_change():
    q = started()
    q.note(1.0, "a.jpg", delete=True)
    q.note(1.1, "a.jpg")  # editor-style save: unlink, write again
    assert q.take(2.1).paths == {"a.jpg"}


def test_pending_paths_are_retried_with_backoff_then_dropped():
    q = started()
    q.note(0.0, "slow.jpg")
    now = 1.0
    delays = []
    for _ in range(3):
        work = q.take(now)
        assert work is not None and work.paths == {"slow.jpg"}
        q.finished(now, work, retry=["slow.jpg"])
        delays.append(q.next_wakeup() - now)
        now = q.next_wakeup()
    assert delays == [1.0, 2.0, 4.0]
    work = q.take(now)
    q.finished(now, work, retry=["slow.jpg"])  # the 4th failure: given up, the full scan will find it
    assert len(q) == 0 and q.next_wakeup() > 3000


def test_an_event_during_backoff_resets_it():
    q = started()
    q.note(0.0, "a.jpg")
    for now in (1.0, 2.0, 4.0):
        q.finished(now, q.take(now), retry=["a.jpg"])
    assert q.next_wakeup() == 8.0
    q.note(5.0, "a.jpg")  # news: the file changed again
    assert q.next_wakeup() == 6.0
    assert q.take(6.0).paths == {"a.jpg"}


def test_a_path_noted_again_during_its_run_keeps_its_new_event():
    q = started()
    q.note(0.0, "a.jpg")
    work = q.take(1.0)
    q.note(1.5, "a.jpg")  # written again while the run looked at it
    q.finished(2.0, work, retry=["a.jpg"])
    assert q.next_wakeup() == 2.5  # its own quiet period, not a backoff


def test_periodic_full_scan_is_jittered_within_a_quarter():
    for seed in range(20):
        q = MirrorQueue(Timing(jitter=0.25), 0.0, rng=random.Random(seed))
        q.take(0.0)
        assert 2700.0 <= q.next_wakeup() <= 4500.0
        work = q.take(q.next_wakeup())
        assert work.is_full and work.reason == "periodic"


def test_fallback_scans_more_often_when_the_watcher_cannot_be_trusted():
    q = started(Timing(jitter=0.0, fallback_scan_interval=60.0))
    assert q.next_wakeup() == 3600.0
    q.set_fallback(True, 10.0)
    assert q.next_wakeup() == 70.0


def test_overflow_requests_a_full_scan_that_swallows_the_dirty_paths():
    q = started()
    q.note(1.0, "a.jpg")
    q.request_full(1.5, "watcher overflow")
    q.note(1.2, "b.jpg")  # covered by the coming full scan: not even recorded
    work = q.take(1.5)
    assert work.is_full and work.reason == "watcher overflow"
    assert len(q) == 0 and q.take(100.0) is None


def test_too_many_dirty_paths_collapse_into_a_full_scan():
    q = started(Timing(max_paths=5, jitter=0.0))
    for i in range(6):
        q.note(1.0, f"{i}.jpg")
    work = q.take(2.0)
    assert work.is_full and "more than 5" in work.reason


def test_the_folder_itself_changing_means_a_full_scan():
    q = started()
    q.note(1.0, "")
    assert q.take(2.0).is_full


def test_pause_holds_the_queue_and_requeue_loses_nothing():
    q = started()
    q.note(1.0, "a.jpg")
    work = q.take(2.0)
    q.requeue(work, 2.0)  # the gallery was down
    q.pause(7.0, "gallery unreachable")
    q.note(3.0, "b.jpg")
    assert q.take(6.9) is None and q.next_wakeup() == 7.0 and len(q) == 2
    assert q.take(7.0).paths == {"a.jpg", "b.jpg"}
    assert q.pause_reason is None


def test_an_indefinite_pause_waits_for_resume():
    q = started()
    q.note(1.0, "a.jpg")
    q.pause(math.inf, "folder gone")
    assert q.take(1e9) is None and q.next_wakeup() == math.inf
    q.resume()
    assert q.take(1e9) is not None


def test_a_requeued_full_scan_runs_again():
    q = started()
    q.requeue(Work(None, "start"), 5.0)
    assert q.take(5.0).is_full


def test_backoff_doubles_to_its_cap_and_resets():
    b = Backoff(5.0, 30.0)
    assert [b.fail(0.0) for _ in range(5)] == [5.0, 10.0, 20.0, 30.0, 30.0]
    b.reset()
    assert b.fail(100.0) == 105.0
    assert Backoff(5.0, 600.0).fail(0.0, base=300.0) == 300.0


def test_timing_refuses_nonsense():
    with pytest.raises(ValueError):
        Timing(quiet=-1)
    with pytest.raises(ValueError):
        Timing(jitter=1.5)


# --------------------------------------------------------------------------- properties

ops = st.lists(
    st.tuples(st.floats(0.0, 5.0), st.sampled_from(["a", "b", "c", "d/e", "d/f"]), st.booleans()),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_every_noted_path_is_handed_out_and_never_before_it_settles(events):
    """Drive the queue with random events and wake it exactly when it asks: every path comes out,
    no earlier than its quiet period after its last event (or max_delay after its first)."""
    q = started()
    now = 0.0
    first: dict[str, float] = {}
    last: dict[str, tuple[float, bool]] = {}
    seen: set[str] = set()
    t_events = []
    acc = 0.0
    for dt, p, d in events:  # cumulative times: events arrive in order
        acc += dt
        t_events.append((acc, p, d))
    i = 0
    while i < len(t_events) or len(q):
        wake = q.next_wakeup()
        next_event = t_events[i][0] if i < len(t_events) else math.inf
        if next_event <= wake:
            now, p, d = t_events[i]
            i += 1
            q.note(now, p, delete=d)
            first.setdefault(p, now)
            last[p] = (now, d)
            continue
        now = wake
        work = q.take(now)
        assert work is not None, "next_wakeup promised work"
        if work.is_full:
            assert work.reason == "periodic"
            seen.update(first)
            first.clear()
            last.clear()
            continue
        for p in work.paths:
            t_last, was_delete = last[p]
            quiet = T.delete_quiet if was_delete else T.quiet
            settled = now >= t_last + quiet - 1e-9 or now >= first[p] + T.max_delay - 1e-9
            # a path may ride along early only as a held delete with a due create
            assert settled or was_delete
            seen.add(p)
            del first[p], last[p]
    assert set(p for _, p, _ in t_events) <= seen
    assert len(q) == 0


@settings(max_examples=200, deadline=None)
@given(ops, st.lists(st.sampled_from(["a", "b", "c"]), max_size=5))
def test_next_wakeup_is_never_later_than_the_first_due_path(events, retry):
    q = started()
    now = 0.0
    for dt, p, d in events:
        now += dt
        q.note(now, p, delete=d)
    work = q.take(now + 0.5)
    if work is not None and not work.is_full:
        q.finished(now + 0.5, work, retry=[p for p in retry if p in work.paths])
    wake = q.next_wakeup()
    if len(q) and wake < math.inf:
        assert q.take(wake) is not None  # waking then finds work
