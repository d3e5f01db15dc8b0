"""The watchdog adapter: filesystem events in, (kind, path, is_dir, dest) records out. Nothing else.

Events are hints (the full scan is the truth), so this layer only has to be cheap and honest about
what it may have missed:

  * overflow   the kernel's inotify queue overflowed (IN_Q_OVERFLOW): events were lost. watchdog
               rebuilds its watches and logs it, but tells no handler (watchdog#654), so our watch group
               reports it.
  * limit      inotify_add_watch failed with ENOSPC (fs.inotify.max_user_watches) or EMFILE
               (max_user_instances). watchdog raises it for the root but silently skips a
               subdirectory it cannot watch; our watch group reports both.
  * root gone  the watched folder itself was deleted (watchdog stops the emitter).

The inotify hooks subclass watchdog internals (InotifyWatchGroup / InotifyEmitter, watchdog 7.x:
pyproject pins it). With another watchdog or on another OS the plain Observer is used: events still
arrive, and overflow or a watch limit goes unnoticed until the periodic full scan, which is what it
is there for.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from imgsync.scan import PathFilter

log = logging.getLogger("imgsync.watch")

Kind = Literal["created", "modified", "deleted", "moved"]


@dataclass(frozen=True, slots=True)
class Change:
    """One filesystem event, relative to the mirror's folder (POSIX; "" is the folder itself).
    A move from outside the folder arrives as "created", a move out of it as "deleted"."""

    kind: Kind
    path: str
    is_dir: bool = False
    dest: str | None = None


#: (kind, detail): kind is "overflow", "limit" or "root gone"
Trouble = Callable[[str, str], None]

LIMIT_HELP = {
    errno.ENOSPC: (
        "the inotify watch limit (fs.inotify.max_user_watches) is reached",
        "sudo sysctl fs.inotify.max_user_watches=524288  (to keep it: echo "
        "fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/90-imgsync-inotify.conf)",
    ),
    errno.EMFILE: (
        "the inotify instance limit (fs.inotify.max_user_instances) is reached",
        "sudo sysctl fs.inotify.max_user_instances=512  (to keep it: echo "
        "fs.inotify.max_user_instances=512 | sudo tee /etc/sysctl.d/90-imgsync-inotify.conf)",
    ),
}


def describe_limit(e: OSError) -> str | None:
    """The actionable message for an inotify limit error, or None if `e` is something else."""
    if e.errno not in LIMIT_HELP:
        return None
    what, fix = LIMIT_HELP[e.errno]
    return f"{what}; changes are found by periodic full scans until it is raised: {fix}"


# --------------------------------------------------------------------------- records → dirty paths


def relative(root: str, path: str) -> str | None:
    """`path` relative to `root` in POSIX form; "" for the root itself; None if outside it."""
    if path == root:
        return ""
    if path.startswith(root + os.sep):
        rel = path[len(root) + 1 :]
        return rel if os.sep == "/" else rel.replace(os.sep, "/")
    return None


class Relevance:
    """Would a path matter to the mirror's scan? (Excluded dirs and non-image files need no run.)"""

    def __init__(self, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
        self._filter = PathFilter(include, exclude)
        self._wanted = self._filter.file_matcher()

    def __call__(self, path: str, is_dir: bool) -> bool:
        parts = path.split("/")
        last = len(parts) if is_dir else len(parts) - 1
        for i in range(last):
            if self._filter.excludes(parts[i], "/".join(parts[: i + 1])):
                return False
        return is_dir or bool(self._wanted(parts[-1], path))


def dirty_paths(change: Change, relevant: Callable[[str, bool], bool]) -> list[tuple[str, bool]]:
    """The (path, is_delete) pairs a change makes dirty. A directory's "modified" event is dropped:
    it only says an entry inside changed, which has its own event (and scanning the parent of every
    change would walk the whole folder)."""
    c = change
    if c.kind == "moved":
        out = []
        if relevant(c.path, c.is_dir):
            out.append((c.path, False))  # not a delete: it pairs with its destination in one run
        if c.dest is not None and relevant(c.dest, c.is_dir):
            out.append((c.dest, False))
        return out
    if c.kind == "modified" and c.is_dir:
        return []
    if not relevant(c.path, c.is_dir):
        return []
    return [(c.path, c.kind == "deleted")]


def to_change(event: FileSystemEvent, root: str) -> Change | None:
    """A watchdog event as a Change relative to `root`; None for events that need no work."""
    kind = event.event_type
    src = os.fsdecode(event.src_path)
    is_dir = event.is_directory
    if kind in ("opened", "closed_no_write"):
        return None
    if kind == "moved":
        rel_src = relative(root, src) if src else None
        rel_dest = relative(root, os.fsdecode(event.dest_path)) if event.dest_path else None
        if rel_src is None and rel_dest is None:
            return None
        if rel_src is None:
            return Change("created", rel_dest or "", is_dir)
        if rel_dest is None:
            return Change("deleted", rel_src, is_dir)
        return Change("moved", rel_src, is_dir, rel_dest)
    rel = relative(root, src)
    if rel is None:
        return None
    if kind in ("closed", "attrib"):  # written and closed / touched: the content may be new
        kind = "modified"
    if kind not in ("created", "modified", "deleted"):
        return None
    return Change(kind, rel, is_dir)  # type: ignore[arg-type]


class _Handler(FileSystemEventHandler):
    def __init__(self, root: str, sink: Callable[[Change], None], trouble: Trouble) -> None:
        self.root = root
        self.sink = sink
        self.trouble = trouble

    def dispatch(self, event: FileSystemEvent) -> None:
        change = to_change(event, self.root)
        if change is None:
            return
        if change.path == "" and change.kind == "deleted":
            self.trouble("root gone", f"{self.root} was deleted or unmounted")
            return
        self.sink(change)


# --------------------------------------------------------------------------- the observer


def _inotify_observer_class() -> Callable[..., Any] | None:
    """An observer factory whose watch groups report overflow and watch-limit errors; None if this
    watchdog has no such internals (then the plain Observer is used)."""
    try:
        from watchdog.observers.api import BaseObserver
        from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
        from watchdog.observers.inotify_c import InotifyFD
    except ImportError:
        return None
    needed = ((InotifyWatchGroup, "_add_callback"), (InotifyWatchGroup, "on_queue_overflow"), (InotifyFD, "stop"))
    if not all(hasattr(cls, name) for cls, name in needed):
        return None

    class ReportingGroup(InotifyWatchGroup):
        report: Trouble = staticmethod(lambda kind, detail: None)  # set per emitter, see below

        def _add_callback(self, path: bytes) -> None:
            # watchdog's own version swallows every error below the root, the watch limit included.
            try:
                wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
            except OSError as e:
                if path == self.path:
                    raise
                if e.errno in LIMIT_HELP:
                    type(self).report("limit", describe_limit(e) or str(e))
                return  # a subdirectory that vanished or cannot be read: the scan will say
            self._active_callbacks_by_path[path] = wd
            self._active_callbacks_by_watch[wd] = path

        def on_queue_overflow(self) -> None:
            super().on_queue_overflow()
            type(self).report("overflow", "the kernel's inotify queue overflowed; events were lost")

    class ReportingEmitter(InotifyEmitter):
        report: Trouble = staticmethod(lambda kind, detail: None)

        def on_thread_start(self) -> None:
            group = type("BoundGroup", (ReportingGroup,), {"report": staticmethod(type(self).report)})
            self._inotify = group(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    class OwnInotifyObserver(BaseObserver):
        """An inotify instance (and its reader thread) of its own, closed when the observer stops, as
        watchdog's InotifyObserver does: emitters left to themselves share one process-wide instance
        whose thread never ends (a stopped or restarted watcher would leave it running)."""

        def __init__(self, emitter_class: Any, *, inotify_fd: Any = None, **emitter_kwargs: Any) -> None:
            # inotify_fd: the caller's own (a test injecting faults), which it stops itself
            self._own_fd = InotifyFD() if inotify_fd is None else None
            if self._own_fd is not None:
                self._own_fd.start()
            super().__init__(emitter_class, inotify_fd=inotify_fd or self._own_fd, **emitter_kwargs)

        def on_thread_stop(self) -> None:  # also called by stop() when start() failed
            super().on_thread_stop()
            if self._own_fd is not None:
                self._own_fd.stop()

    def make(trouble: Trouble, **emitter_kwargs: Any) -> Any:
        emitter = type("BoundEmitter", (ReportingEmitter,), {"report": staticmethod(trouble)})
        return OwnInotifyObserver(emitter, **emitter_kwargs)

    return make


_MAKE_OBSERVER = _inotify_observer_class()


def _event_filter() -> list[type[FileSystemEvent]]:
    """The events worth a kernel wake-up: not IN_OPEN / IN_CLOSE_NOWRITE, which our own scan's reads
    would cause for every file it hashes."""
    from watchdog import events as ev

    return [
        ev.FileCreatedEvent,
        ev.DirCreatedEvent,
        ev.FileModifiedEvent,
        ev.FileDeletedEvent,
        ev.DirDeletedEvent,
        ev.FileMovedEvent,
        ev.DirMovedEvent,
        ev.FileClosedEvent,
    ]


class WatchLimitError(OSError):
    """The folder could not be watched at all because an inotify limit is reached."""


class FolderWatch:
    """Watches one mirror's folder recursively; calls `sink(Change)` and `trouble(kind, detail)` from
    watchdog's thread. start() raises WatchLimitError (with the sysctl fix) or OSError (folder gone)."""

    def __init__(
        self,
        folder: str,
        sink: Callable[[Change], None],
        trouble: Trouble,
        *,
        follow_symlinks: bool = False,
        **emitter_kwargs: Any,
    ) -> None:
        self.folder = folder
        self._sink = sink
        self._trouble = trouble
        self._follow = follow_symlinks
        self._emitter_kwargs = emitter_kwargs
        self._observer: Any = None
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the folder when watching began

    def start(self) -> None:
        st = os.stat(self.folder)
        if _MAKE_OBSERVER is not None:
            observer = _MAKE_OBSERVER(self._trouble, **self._emitter_kwargs)
        else:
            from watchdog.observers import Observer

            observer = Observer()
        observer.schedule(
            _Handler(self.folder, self._sink, self._trouble),
            self.folder,
            recursive=True,
            follow_symlink=self._follow,
            event_filter=_event_filter(),
        )
        try:
            observer.start()
        except OSError as e:
            _stop(observer)
            message = describe_limit(e)
            if message:
                raise WatchLimitError(e.errno, message) from None
            raise
        self._observer = observer
        self.identity = (st.st_dev, st.st_ino)

    def alive(self) -> bool:
        """Still watching? (An emitter stops when the root is deleted, or dies on an error.)"""
        obs = self._observer
        return obs is not None and obs.is_alive() and all(e.is_alive() for e in obs.emitters)

    def stop(self) -> None:
        obs, self._observer = self._observer, None
        if obs is not None:
            _stop(obs)


def _stop(observer: Any) -> None:
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=5)
    except RuntimeError:  # never started
        pass
