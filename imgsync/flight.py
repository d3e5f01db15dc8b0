"""Several gallery calls in flight at once, with every decision still made on one thread.

An action (add an image, delete a batch, ...) is written as a generator, a *step*: it does its local work
(read the file, spool it, journal the intent), yields the gallery call it needs as a zero-argument
callable, gets the answer back (or the call's exception thrown in at the yield), records the outcome,
and may yield again (a duplicate answer is followed by a search). `drive()` runs the yielded calls on
worker threads and everything else on the caller's thread, so the manifest is only ever touched by one
thread and each step reads exactly as the sequential code it replaced: journal, call, outcome. Up to
`limit()` steps are under way at once; while calls are in flight the caller's thread prepares the next
image (which is where reading, validating and hashing overlap with the network).

Stopping is orderly. A *stop* error from a step (the gallery is down, out of quota, refusing our
credentials) or from `on_done` (asked to shut down) starts no new step and lets those under way finish
and record their outcomes; the first stop is returned. Anything else (a manifest error, a full disk, a
crash) waits for the calls already sent to end — their answers are lost, as in a real crash, and the
journal's open intents are what the next run recovers — and propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from imgsync.gallery.pacing import CEILING

#: A step yields gallery calls, is sent their answers, and returns how much progress it made.
Step = Generator[Callable[[], Any], Any, int]


class Flight:
    """Steps under way, their calls on worker threads. `submit` starts a step once fewer than `limit()` are
    under way (finishing others meanwhile), `poll` finishes the calls that have ended, `drain` waits for
    the rest; after a stop, nothing new starts. Used as a context manager: leaving it with an exception
    waits for the calls already sent, records nothing more, and lets the exception through."""

    def __init__(
        self,
        *,
        limit: Callable[[], int],
        on_done: Callable[[int], None] = lambda n: None,
        stops: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._limit = limit
        self._on_done = on_done
        self._stops = stops
        self._running: dict[Future[Any], Step] = {}
        #: the first stop error (from a step or from on_done), else None
        self.stopped: BaseException | None = None
        # Threads start as calls need them; the default (cores + 4) would quietly cap what limit() asks for.
        self._pool = ThreadPoolExecutor(max_workers=CEILING, thread_name_prefix="imgsync-call")

    def __enter__(self) -> Flight:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        if error is not None:
            # Not a stop: the caller's thread failed (or a call raised what no step handles). The calls
            # already sent end on their own; nothing more is recorded (the journal has their intents).
            wait(self._running)
            for step in self._running.values():
                step.close()
            self._running.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, step: Step) -> None:
        while self.stopped is None and len(self._running) >= max(1, self._limit()):
            self._finish(block=True)
        if self.stopped is None:
            self._advance(step, None)
        else:
            step.close()

    def poll(self) -> None:
        if self._running:
            self._finish(block=False)

    def drain(self) -> BaseException | None:
        while self._running:
            self._finish(block=True)
        return self.stopped

    def _finish(self, *, block: bool) -> None:
        finished, _ = wait(self._running, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for future in finished:
            self._advance(self._running.pop(future), future)

    def _advance(self, step: Step, answer: Future[Any] | None) -> None:
        """Resume `step` with the answer of its call (None: start it); it yields its next call or ends."""
        try:
            if answer is None:
                call = next(step)
            elif (error := answer.exception()) is not None:
                call = step.throw(error)
            else:
                call = step.send(answer.result())
        except StopIteration as done:
            try:
                self._on_done(done.value or 0)
            except self._stops as e:
                self.stopped = self.stopped or e
            return
        except self._stops as e:
            self.stopped = self.stopped or e
            return
        self._running[self._pool.submit(call)] = step


def drive(
    steps: Iterable[Step],
    *,
    limit: Callable[[], int],
    on_done: Callable[[int], None] = lambda n: None,
    stops: tuple[type[BaseException], ...] = (),
) -> BaseException | None:
    """Run `steps` with at most `limit()` (≤ pacing.CEILING) under way at once; returns the first stop
    error, else None."""
    with Flight(limit=limit, on_done=on_done, stops=stops) as flight:
        for step in steps:
            flight.submit(step)
            if flight.stopped is not None:
                break
        return flight.drain()
