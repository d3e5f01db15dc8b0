"""imgsync.forked: a function run in a forked child, its result back through a pipe; failures are
ChildFailed, never a hang or a zombie."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from imgsync import forked

pytestmark = pytest.mark.usefixtures("forkable")


def test_the_child_answers_with_its_result_computed_in_its_own_process() -> None:
    child = forked.start(lambda: (os.getpid(), [1, 2**70], "ü"))
    assert child is not None
    with child:
        pid, numbers, text = child.result()
    assert pid != os.getpid()
    assert numbers == [1, 2**70] and text == "ü"


def _raise() -> None:
    raise RuntimeError("boom")


def _killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _unmarshallable() -> object:
    return object()


@pytest.mark.parametrize("fn", [_raise, _killed, _unmarshallable])
def test_a_child_that_fails_is_child_failed_in_the_parent(fn: object) -> None:
    child = forked.start(fn)  # type: ignore[arg-type]
    assert child is not None
    with child, pytest.raises(forked.ChildFailed):
        child.result()


def test_a_child_given_up_on_is_killed_and_reaped() -> None:
    never = threading.Event()  # not set: the child would wait for good (no thread runs in it)
    child = forked.start(lambda: never.wait())
    assert child is not None
    pid = child._pid
    assert pid is not None
    with pytest.raises(KeyError), child:
        raise KeyError("the parent failed before reading the result")
    with pytest.raises(ChildProcessError):  # reaped: no zombie left to wait for
        os.waitpid(pid, os.WNOHANG)


def test_no_fork_while_another_thread_runs() -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert not forked.can_fork()
        assert forked.start(lambda: 1) is None
    finally:
        release.set()
        other.join()
    assert forked.can_fork()


def test_tickets_are_shared_by_the_parent_and_its_child_each_number_once() -> None:
    with forked.Tickets(forked.Tickets.MAX) as tickets:

        def take_all() -> list[int]:
            mine = []
            while (i := tickets.take()) is not None:
                mine.append(i)
            return mine

        child = forked.start(take_all)
        assert child is not None
        with child:
            ours = take_all()
            theirs = child.result()
    assert sorted(ours + theirs) == list(range(forked.Tickets.MAX))
    with pytest.raises(ValueError):
        forked.Tickets(forked.Tickets.MAX + 1)
