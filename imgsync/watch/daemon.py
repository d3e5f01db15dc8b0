"""The watch daemon's loop: wake on due paths, timers and signals; call the one pipeline; repeat.

    watchdog thread ──Change──► inbox ──► MirrorQueue.note   (debounce.py: pure, clock-driven)
                                              │ take(now): due paths, or a full scan
                                              ▼
                          pipeline.reconcile_mirror(scope=paths | None, min_age_ns=...)
                                              │ report
         pending / failed paths ◄─────────────┤ (retried with backoff)
         gallery stopped  ───► hold every call, keep the queues, retry with backoff
         folder missing   ───► pause that mirror (nothing deleted) until the folder is back

The loop runs in one thread (Daemon.run) and owns all state; other threads only put records in the
inbox and set the wake event (stop() and request_reload() do the same), so nothing here needs a lock.
Status goes to <state_dir>/daemon.json (statusfile.py) and, under systemd, to STATUS= (notify.py).

Stopping: stop() makes the loop finish the call in flight and end the run there (the executor records
every call before and after making it, so what is not done stays in the journal or the queue for the
next start). A full scan cannot be interrupted; the command gives up waiting after a grace period and
exits anyway, which the journal makes as safe as a kill -9.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from imgsync.clock import SYSTEM_CLOCK, Clock
from imgsync.config import MirrorConfig
from imgsync.errors import (
    GalleryError,
    ImgsyncError,
)
from imgsync.folder import check_folder
from imgsync.gallery import Gallery
from imgsync.manifest import Store
from imgsync.statedir import DAEMON_STATUS, spool_dir
from imgsync.watch import policy
from imgsync.watch.debounce import INF, Backoff, MirrorQueue, Timing, Work
from imgsync.watch.events import (
    Change,
    FolderWatch,
    Relevance,
    WatchLimitError,
    dirty_paths,
)
from imgsync.watch.notify import Notifier
from imgsync.watch.statusfile import write_status

log = logging.getLogger("imgsync.watch")

#: Seconds between checks that each mirror's folder is still there and still the one being watched.
ROOT_CHECK = 2.0
#: The least time between two writes of daemon.json.
PUBLISH_EVERY = 1.0


@dataclass
class Reloaded:
    """What a config reload gives the daemon: the mirrors to watch, the timing, maybe a new gallery."""

    mirrors: Sequence[MirrorConfig]
    timing: Timing
    gallery: Gallery | None = None


WatchFactory = Callable[[MirrorConfig, Callable[[Change], None], Callable[[str, str], None]], Any]


def default_watch(
    mirror: MirrorConfig, sink: Callable[[Change], None], trouble: Callable[[str, str], None]
) -> FolderWatch:
    return FolderWatch(os.fspath(mirror.folder), sink, trouble, follow_symlinks=mirror.follow_symlinks)


@dataclass
class _Slot:
    mirror: MirrorConfig
    queue: MirrorQueue
    relevant: Relevance
    watch: Any = None
    mode: str = "starting"
    folder_paused: str | None = None  # why the folder cannot be used (gone, not a directory, unreadable)
    error_paused: str | None = None
    errors: Backoff = field(default_factory=lambda: Backoff(5.0, 600.0))
    note: str | None = None  # e.g. deletes withheld by a safety guard
    last_run: dict[str, Any] | None = None
    limit_reported: bool = False
    #: rejections already logged (path → reason): every full scan reports them all again
    told_rejected: dict[str, str] = field(default_factory=dict)


class Daemon:
    def __init__(
        self,
        mirrors: Sequence[MirrorConfig],
        store: Store,
        gallery: Gallery,
        *,
        state_dir: Path,
        timing: Timing = Timing(),
        clock: Clock = SYSTEM_CLOCK,
        notifier: Notifier | None = None,
        watch_factory: WatchFactory | None = default_watch,
        reload: Callable[[], Reloaded] | None = None,
        gallery_backoff: Backoff | None = None,
        rng: random.Random | None = None,
        root_check: float = ROOT_CHECK,
        on_run: Callable[[str, Work, Any], None] | None = None,
    ) -> None:
        self.store = store
        self.gallery = gallery
        self.state_dir = Path(state_dir)
        self.spool_dir = spool_dir(self.state_dir)
        self.timing = timing
        self.clock = clock
        self.notifier = notifier or Notifier(None)
        self._watch_factory = watch_factory
        self._reload = reload
        self._gallery_backoff = gallery_backoff or Backoff(5.0, 300.0)
        self._rng = rng or random.Random()
        self._root_check = root_check
        self._on_run = on_run
        self._inbox: queue.SimpleQueue[tuple[str, str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = False
        self._reload_requested = False
        now = clock.monotonic()
        self._slots: dict[str, _Slot] = {m.name: self._new_slot(m, now) for m in mirrors}
        self._gallery_until: float | None = None
        self._gallery_reason: str | None = None
        self.last_error: str | None = None
        self._last_error_at: str | None = None
        self._started_at = _iso(clock.time())
        self._next_root_check = now
        self._next_publish = 0.0
        self._published: Any = None
        self._summary = ""
        self._order = 0
        #: monotonic time the loop last made progress (the command's systemd watchdog pings check it)
        self.heartbeat = now
        self.busy_since: float | None = None
        self.stopped = threading.Event()

    # ------------------------------------------------------------------ control (any thread)

    def stop(self) -> None:
        self._stop = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def request_full_scan(self, mirror: str, reason: str = "asked for") -> None:
        """Reconcile `mirror`'s whole folder now (the web console's "Sync now"); an unknown name is ignored."""
        self._inbox.put(("full", mirror, reason))
        self._wake.set()

    def queue_length(self) -> int:
        return sum(len(s.queue) for s in self._slots.values())

    def idle(self) -> bool:
        """Nothing queued and no run being taken, made or recorded (for status and tests: a change seen
        by the watcher is in the queue until its run is over, so idle + the folder's state is final)."""
        return self.busy_since is None and self.queue_length() == 0

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        try:
            now = self.clock.monotonic()
            for slot in self._slots.values():
                self._start_watch(slot, now)
            self._publish(now, force=True)
            self.notifier.ready(self._summary)
            log.info(
                "watching %s",
                ", ".join(f"{s.mirror.name} ({s.mirror.folder}, {s.mode})" for s in self._slots.values())
                or "no mirror",
            )
            while not self._stop:
                self._step()
        finally:
            for slot in self._slots.values():
                self._stop_watch(slot)
            self._publish(self.clock.monotonic(), force=True, running=False)
            self.notifier.stopping("stopping")
            self.stopped.set()

    def _step(self) -> None:
        now = self.clock.monotonic()
        self.heartbeat = now
        self._drain(now)
        if self._reload_requested:
            self._reload_requested = False
            self._do_reload(now)
        if now >= self._next_root_check:
            self._check_folders(now)
            self._next_root_check = now + self._root_check
        if self._run_due(now):
            return
        self._publish(now)
        wake = min(self._next_root_check, self._next_wakeup())
        if self._published_pending:
            wake = min(wake, self._next_publish)
        timeout = max(0.0, wake - self.clock.monotonic())
        if self._wake.wait(min(timeout, 3600.0)):
            self._wake.clear()

    def _next_wakeup(self) -> float:
        due = min((s.queue.next_wakeup() for s in self._slots.values()), default=INF)
        if self._gallery_until is not None:
            due = max(due, self._gallery_until)
        return due

    def _drain(self, now: float) -> None:
        while True:
            try:
                kind, name, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            slot = self._slots.get(name)
            if slot is None:
                continue  # a mirror removed by a reload
            if kind == "change":
                for path, delete in dirty_paths(payload, slot.relevant):
                    slot.queue.note(now, path, delete=delete)
            elif kind == "overflow":
                log.warning("%s: %s; scanning the whole folder", name, payload)
                slot.queue.request_full(now + self.timing.quiet, "watcher overflow")
            elif kind == "limit":
                if not slot.limit_reported:
                    log.error("%s: %s", name, payload)
                    self._error(f"{name}: {payload}")
                    slot.limit_reported = True
                slot.mode = "periodic scans (inotify limit)"
                slot.queue.set_fallback(True, now)
                slot.queue.request_full(now + self.timing.quiet, "inotify limit: some folders are not watched")
            elif kind == "full":
                slot.queue.request_full(now, payload)
            elif kind == "root gone":
                self._next_root_check = now  # check_folders pauses it

    def _run_due(self, now: float) -> bool:
        if self._gallery_until is not None and now < self._gallery_until:
            return False
        slots = list(self._slots.values())
        # Busy from before the work leaves its queue until its outcome is recorded: idle() never sees
        # a change that is neither queued nor done.
        self.busy_since = now
        try:
            for i in range(len(slots)):
                slot = slots[(self._order + i) % len(slots)]
                work = slot.queue.take(now)
                if work is not None:
                    self._order = (self._order + i + 1) % len(slots)  # round robin: no mirror starves
                    if slot.error_paused:
                        slot.error_paused = None
                    self._execute(slot, work)
                    return True
            return False
        finally:
            self.busy_since = None

    # ------------------------------------------------------------------ one run

    def _execute(self, slot: _Slot, work: Work) -> None:
        """One run of the pipeline, then what policy.after_run decides, carried out."""
        from imgsync.pipeline import reconcile_mirror  # heavy (Pillow, SQLAlchemy): loaded on first run

        mirror = slot.mirror
        scope = None if work.paths is None else sorted(work.paths)
        what = f"full scan ({work.reason})" if scope is None else f"{len(scope)} changed path(s)"
        log.debug("%s: %s", mirror.name, what if scope is None or len(scope) > 5 else f"{what}: {scope}")
        try:
            run = reconcile_mirror(
                mirror,
                self.store,
                self.gallery,
                spool_dir=self.spool_dir,
                scope=scope,
                min_age_ns=int(self.timing.min_age * 1e9),
                settle=None,
                on_progress=self._progress,
                should_stop=lambda: self._stop,
            )
        except ImgsyncError as e:  # the manifest failed, a config value the pipeline refuses, ...
            self._mirror_failed(slot, work, str(e))
            return
        except Exception as e:  # a bug: keep the daemon (and the other mirrors) going, say it loudly
            log.exception("%s: the run failed", mirror.name)
            self._mirror_failed(slot, work, f"{type(e).__name__}: {e}")
            return
        now = self.clock.monotonic()
        report = run.report
        slot.last_run = {"at": _iso(self.clock.time()), "what": what, **report.counts()}
        # A file refused soon after it changed may be a copy still in progress (a truncated JPEG is
        # "rejected" like a broken one): the policy looks at it again, quietly.
        wall = self.clock.time()
        young = {p for p, _ in report.rejected if policy.is_young(_mtime(mirror.folder / p), wall)}
        verdict = policy.after_run(report, young=young, told=slot.told_rejected)
        if verdict.action == "requeue":  # stopping: the rest of the plan runs at the next start
            slot.queue.requeue(work, now)
        elif verdict.action == "pause_folder":  # the folder went away between the last check and this run
            slot.queue.requeue(work, now)
            self._pause_folder(slot, verdict.reason or "")
        elif verdict.action == "hold_gallery":
            assert verdict.error is not None
            slot.queue.requeue(work, now)
            self._pause_gallery(verdict.error, now)
        else:
            self._finish(slot, work, verdict, what, now)
        for name in sorted(self.store.take_freed()):
            freed = self._slots.get(name)
            if freed is not None:  # its files wait for an image this run deleted: judged again now
                freed.queue.request_full(now, "an entry holding its files' image was deleted")
        if self._on_run is not None:
            self._on_run(mirror.name, work, run)

    def _finish(self, slot: _Slot, work: Work, verdict: policy.Verdict, what: str, now: float) -> None:
        name = slot.mirror.name
        if self._gallery_until is not None:
            log.info("gallery reachable again; calls resumed")
        self._gallery_backoff.reset()
        self._gallery_until = self._gallery_reason = None
        slot.errors.reset()
        slot.queue.finished(now, work, list(verdict.retry))
        slot.note = verdict.note
        if verdict.note:
            log.warning("%s: deletes withheld: %s", name, verdict.note)
        c = verdict.counts
        if verdict.changed:
            log.info(
                "%s: %s: %d added, %d updated, %d deleted, %d rejected, %d failed, %d pending",
                name,
                what,
                c["added"],
                c["updated"],
                c["deleted"],
                c["rejected"],
                c["failed"],
                c["pending"],
            )
        for path, why in verdict.quiet:
            log.debug("%s: %s refused for now (%s); it changed recently, looking again later", name, path, why)
        for path, why in verdict.tell:
            log.warning("%s: rejected %s: %s", name, path, why)
            slot.told_rejected[path] = why
        for path, why in verdict.failed:
            log.warning("%s: failed %s: %s (will retry)", name, path, why)

    def _progress(self, n: int) -> None:
        self.heartbeat = self.clock.monotonic()

    def _mirror_failed(self, slot: _Slot, work: Work, message: str) -> None:
        now = self.clock.monotonic()
        until = slot.errors.fail(now)
        log.error("%s: %s (retrying in %.0f s)", slot.mirror.name, message, until - now)
        self._error(f"{slot.mirror.name}: {message}")
        slot.queue.requeue(work, now)
        slot.queue.pause(until, message)
        slot.error_paused = message

    def _pause_gallery(self, error: GalleryError, now: float) -> None:
        self._gallery_until = self._gallery_backoff.fail(now, base=policy.gallery_backoff_base(error))
        self._gallery_reason = str(error)
        log.warning("gallery: %s; holding every call for %.0f s (the queue is kept)", error, self._gallery_until - now)
        self._error(f"gallery: {error}")

    def _pause_folder(self, slot: _Slot, reason: str) -> None:
        if slot.folder_paused is None:
            log.warning("%s: %s; paused until it is back", slot.mirror.name, reason)
            self._error(f"{slot.mirror.name}: {reason}")
        slot.folder_paused = reason
        slot.queue.pause(INF, reason)
        slot.mode = "paused"
        self._stop_watch(slot)

    def _error(self, message: str) -> None:
        self.last_error = message
        self._last_error_at = _iso(self.clock.time())

    # ------------------------------------------------------------------ folders and watchers

    def _check_folders(self, now: float) -> None:
        for slot in self._slots.values():
            problem, identity = _folder_problem(slot.mirror.folder)
            if problem is not None:
                if slot.folder_paused is None:
                    self._pause_folder(slot, problem)
                continue
            if slot.folder_paused is not None:
                log.info("%s: folder %s is back; resuming with a full scan", slot.mirror.name, slot.mirror.folder)
                slot.folder_paused = None
                slot.queue.resume()
                self._start_watch(slot, now)
                slot.queue.request_full(now, "folder is back")
                continue
            w = slot.watch
            if w is not None and (getattr(w, "identity", identity) != identity or not w.alive()):
                log.warning(
                    "%s: the watcher stopped or the folder was replaced; restarting it and scanning the whole folder",
                    slot.mirror.name,
                )
                self._stop_watch(slot)
                self._start_watch(slot, now)
                slot.queue.request_full(now, "watcher restarted")

    def _start_watch(self, slot: _Slot, now: float) -> None:
        name = slot.mirror.name
        if self._watch_factory is None:
            slot.mode = "periodic scans"
            slot.queue.set_fallback(True, now)
            return
        problem, _ = _folder_problem(slot.mirror.folder)
        if problem is not None:
            self._pause_folder(slot, problem)
            return

        def sink(change: Change) -> None:
            self._inbox.put(("change", name, change))
            self._wake.set()

        def trouble(kind: str, detail: str) -> None:
            self._inbox.put((kind, name, detail))
            self._wake.set()

        watch = self._watch_factory(slot.mirror, sink, trouble)
        try:
            watch.start()
        except WatchLimitError as e:
            log.error("%s: cannot watch %s: %s", name, slot.mirror.folder, e.strerror)
            self._error(f"{name}: {e.strerror}")
            slot.mode = "periodic scans (inotify limit)"
            slot.queue.set_fallback(True, now)
            return
        except OSError as e:
            problem, _ = _folder_problem(slot.mirror.folder)
            if problem is not None:
                self._pause_folder(slot, problem)
                return
            log.error(
                "%s: cannot watch %s (%s); falling back to periodic full scans",
                name,
                slot.mirror.folder,
                e.strerror or e,
            )
            self._error(f"{name}: cannot watch the folder: {e.strerror or e}")
            slot.mode = "periodic scans"
            slot.queue.set_fallback(True, now)
            return
        slot.watch = watch
        if not slot.limit_reported:
            slot.mode = "watching"
            slot.queue.set_fallback(False, now)

    def _stop_watch(self, slot: _Slot) -> None:
        if slot.watch is not None:
            slot.watch.stop()
            slot.watch = None

    def _new_slot(self, mirror: MirrorConfig, now: float) -> _Slot:
        return _Slot(mirror, MirrorQueue(self.timing, now, rng=self._rng), Relevance(mirror.include, mirror.exclude))

    # ------------------------------------------------------------------ reload

    def _do_reload(self, now: float) -> None:
        if self._reload is None:
            log.info("SIGHUP: nothing to reload")
            return
        self.notifier.reloading()
        try:
            new = self._reload()
        except ImgsyncError as e:
            log.error("config not reloaded, the running one is kept: %s", e)
            self._error(f"config not reloaded: {e}")
            self.notifier.ready(self._summary)
            return
        if new.gallery is not None:
            self.gallery = new.gallery
            self._gallery_until = self._gallery_reason = None
            self._gallery_backoff.reset()
        if new.timing != self.timing:
            self.timing = new.timing
            for slot in self._slots.values():
                slot.queue.set_timing(new.timing, now)
        wanted = {m.name: m for m in new.mirrors}
        for name in [n for n in self._slots if n not in wanted]:
            log.info("%s: no longer configured; not watched any more", name)
            self._stop_watch(self._slots.pop(name))
        for name, mirror in wanted.items():
            old = self._slots.get(name)
            if old is not None and old.mirror == mirror:
                if old.error_paused:  # the fix may have been in the config: try again now
                    old.error_paused = None
                    old.queue.resume()
                continue
            if old is not None:
                self._stop_watch(old)
            log.info("%s: %s; scanning it all", name, "changed" if old else "added")
            slot = self._slots[name] = self._new_slot(mirror, now)
            self._start_watch(slot, now)
        log.info("config reloaded: %d mirror(s)", len(self._slots))
        self._publish(now, force=True)
        self.notifier.ready(self._summary)

    # ------------------------------------------------------------------ status

    @property
    def _published_pending(self) -> bool:
        return self._published != self._snapshot()

    def _snapshot(self) -> Any:
        now = self.clock.monotonic()
        gallery = None
        if self._gallery_until is not None:
            gallery = {"paused": self._gallery_reason, "retry_in_s": round(max(0.0, self._gallery_until - now))}
        mirrors = {
            name: {
                "folder": str(s.mirror.folder),
                "mode": s.mode,
                "paused": s.folder_paused or s.error_paused,
                "queue": len(s.queue),
                "note": s.note,
                "last_run": s.last_run,
            }
            for name, s in self._slots.items()
        }
        return {
            "queue": self.queue_length(),
            "last_error": self.last_error,
            "last_error_at": self._last_error_at,
            "gallery": gallery,
            "mirrors": mirrors,
        }

    def _publish(self, now: float, *, force: bool = False, running: bool = True) -> None:
        snap = self._snapshot()
        if not force and (snap == self._published or now < self._next_publish):
            return
        self._published = snap
        self._next_publish = now + PUBLISH_EVERY
        data = {
            "pid": os.getpid(),
            "running": running,
            "started_at": self._started_at,
            "updated_at": _iso(self.clock.time()),
            **snap,
        }
        try:
            write_status(self.state_dir, data)
        except OSError as e:
            log.warning("cannot write %s: %s", self.state_dir / DAEMON_STATUS, e.strerror or e)
        summary = summarize(snap)
        if summary != self._summary:
            self._summary = summary
            self.notifier.status(summary)


def summarize(snap: dict[str, Any]) -> str:
    """The one-line STATUS= for systemctl status."""
    mirrors = snap["mirrors"]
    watching = sum(1 for m in mirrors.values() if m["mode"] == "watching")
    parts = [f"{watching}/{len(mirrors)} mirror(s) watched", f"{snap['queue']} queued"]
    paused = [n for n, m in mirrors.items() if m["paused"]]
    if paused:
        parts.append("paused: " + ", ".join(paused))
    if snap["gallery"]:
        parts.append(f"gallery unavailable, retry in {snap['gallery']['retry_in_s']} s")
    return "; ".join(parts)


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _folder_problem(folder: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(why the folder cannot be listed, or None; its (st_dev, st_ino))."""
    check = check_folder(folder)
    return (None if check.usable else f"{check.message}; nothing deleted"), check.identity


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
