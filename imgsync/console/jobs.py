""" "Sync now": one reconcile of one mirror, run through the API in a background thread, its progress
kept for the page to poll.

The reconcile takes the state dir's lock like any other (`imgsync reconcile`, `imgsync watch`): while
another run holds it the job ends "refused" at once, saying who holds it; when that is a running
`imgsync watch`, it says so: the daemon keeps the mirror in step by itself, and a console started from
it (`imgsync watch --ui`) asks the daemon for a full sync instead (DaemonJobs).

Progress comes from the API's events: the plan (how many calls), then each finished call. The page
polls GET /api/jobs/<id> (twice a second while running): on waitress every open server-sent-events
stream would hold one of the few worker threads for as long as the page is open, a poll holds it for
a millisecond.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imgsync.errors import ImgsyncError, LockHeldError

if TYPE_CHECKING:
    from imgsync.api import Imgsync

log = logging.getLogger("imgsync.console")

#: Finished jobs kept for their pages to read (the newest ones).
KEEP_FINISHED = 20


class Busy(Exception):
    """A sync started from this console is still running."""


@dataclass
class Job:
    mirror: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: running → done (the run ended; see exit_code) | refused (the lock is held) | failed (an error)
    state: str = "running"
    phase: str = "starting"
    total: int = 0
    done: int = 0
    exit_code: int | None = None
    message: str | None = None
    lines: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mirror": self.mirror,
            "state": self.state,
            "phase": self.phase,
            "total": self.total,
            "done": self.done,
            "exit_code": self.exit_code,
            "message": self.message,
            "lines": list(self.lines),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    def event(self, event: object) -> None:
        """An imgsync.api event of the run (called on the job's thread)."""
        from imgsync.api import Planned, Progress, Started, Waiting

        if isinstance(event, Waiting):
            self.phase = f"waiting up to {event.limit_s:g} s for {event.files} file(s) still being written"
        elif isinstance(event, Started):
            self.total = event.adds
            self.phase = f"scanning; {self.done} of {event.adds} new image(s) added so far"
        elif isinstance(event, Planned):
            self.total = event.early + event.plan.calls
            if not event.early:
                self.done = 0
            self.phase = f"{self.total} call(s) to make" if self.total else "nothing to change"
        elif isinstance(event, Progress):
            self.done += event.done
            self.phase = f"{self.done} of {self.total} call(s) made"


class Jobs:
    """The console's sync jobs: at most one running at a time (the state dir's lock allows no more)."""

    def __init__(self, opener: Callable[[], Imgsync]) -> None:
        self._open = opener
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._stopping = threading.Event()

    def start(self, mirror: str) -> Job:
        with self._lock:
            running = [j for j in self._jobs.values() if j.state == "running"]
            if running:
                raise Busy(f"a sync of {running[0].mirror} started here is still running")
            job = Job(mirror)
            self._jobs[job.id] = job
            self._forget_old()
            thread = threading.Thread(target=self._run, args=(job,), name=f"console-sync-{mirror}", daemon=True)
            self._threads[job.id] = thread
        thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def latest(self) -> dict[str, Job]:
        """mirror → its newest job."""
        with self._lock:
            out: dict[str, Job] = {}
            for job in sorted(self._jobs.values(), key=lambda j: j.started_at):
                out[job.mirror] = job
            return out

    def stop(self, timeout: float = 8.0) -> None:
        """Ask running jobs to stop after the call in flight, and wait for them (up to `timeout` s)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _forget_old(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.state != "running"), key=lambda j: j.started_at)
        for job in finished[:-KEEP_FINISHED] if len(finished) > KEEP_FINISHED else []:
            self._jobs.pop(job.id, None)
            self._threads.pop(job.id, None)

    def _run(self, job: Job) -> None:
        from imgsync.render import render_report

        job.phase = "scanning the folder"
        try:
            sync = self._open()
            result = sync.reconcile([job.mirror], events=job.event, should_stop=self._stopping.is_set)
        except LockHeldError as e:
            job.state, job.message = "refused", refusal(e, self._daemon_running())
        except ImgsyncError as e:
            job.state, job.message = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - the page shows it; the console keeps serving
            log.exception("sync of %s failed", job.mirror)
            job.state, job.message = "failed", f"internal error: {type(e).__name__}: {e}"
        else:
            job.exit_code = result.exit_code
            job.lines = [line for run in result.runs for line in render_report(run.report).splitlines()]
            job.state = "done"
            job.phase = "done" if result.exit_code == 0 else f"done, exit code {result.exit_code}"
        finally:
            job.finished_at = time.time()

    def _daemon_running(self) -> bool:
        from imgsync.watch.statusfile import read_status

        try:
            status = read_status(self._open().state_dir)
        except ImgsyncError:
            return False
        return bool(status and status.get("running"))


def refusal(error: LockHeldError, daemon_running: bool) -> str:
    if daemon_running:
        return (
            f"{error}. It is `imgsync watch`: it keeps every mirror in step by itself as files change (and "
            "scans each whole folder hourly). To ask it for a full sync from a page, open the console it "
            "serves: `imgsync watch --ui`."
        )
    return f"{error}. Try again when that run is over."


class DaemonJobs:
    """ "Sync now" inside `imgsync watch --ui`: the daemon holds the lock, so the job is a request to it
    for a full reconcile of the mirror; the page then follows the daemon's own status."""

    def __init__(self, request_full_scan: Callable[[str, str], None]) -> None:
        self._request = request_full_scan
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, mirror: str) -> Job:
        self._request(mirror, "asked for from the web console")
        job = Job(
            mirror,
            state="asked",
            phase="asked imgsync watch for a full sync",
            message="imgsync watch will reconcile the whole folder now; the counts follow its progress",
        )
        with self._lock:
            self._jobs = {job.id: job, **dict(list(self._jobs.items())[: KEEP_FINISHED - 1])}
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def latest(self) -> dict[str, Job]:
        return {}

    def stop(self, timeout: float = 0.0) -> None:
        """The daemon's run is the daemon's to stop."""
