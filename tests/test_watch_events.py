"""The watchdog adapter: events → Change records, relevance, and the inotify trouble it reports."""

from __future__ import annotations

import contextlib
import errno
import threading
import time

import pytest
from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from imgsync.config import DEFAULT_EXCLUDE, DEFAULT_INCLUDE
from imgsync.watch.events import (
    Change,
    FolderWatch,
    Relevance,
    WatchLimitError,
    describe_limit,
    dirty_paths,
    relative,
    to_change,
)

ROOT = "/data/pics"
RELEVANT = Relevance(DEFAULT_INCLUDE, DEFAULT_EXCLUDE)


def wait_until(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_relative_paths():
    assert relative(ROOT, ROOT) == ""
    assert relative(ROOT, ROOT + "/a/b.jpg") == "a/b.jpg"
    assert relative(ROOT, "/data/pics2/x.jpg") is None
    assert relative(ROOT, "/elsewhere") is None


@pytest.mark.parametrize(
    "event, change",
    [
        (FileCreatedEvent(ROOT + "/a.jpg"), Change("created", "a.jpg")),
        (FileClosedEvent(ROOT + "/a.jpg"), Change("modified", "a.jpg")),
        (FileOpenedEvent(ROOT + "/a.jpg"), None),
        (FileMovedEvent(ROOT + "/a.jpg", ROOT + "/b/a.jpg"), Change("moved", "a.jpg", False, "b/a.jpg")),
        (DirMovedEvent(ROOT + "/x", ROOT + "/y"), Change("moved", "x", True, "y")),
        (FileMovedEvent("/tmp/dl.jpg", ROOT + "/a.jpg"), Change("created", "a.jpg")),  # moved in
        (FileMovedEvent(ROOT + "/a.jpg", "/tmp/a.jpg"), Change("deleted", "a.jpg")),  # moved out
        (DirDeletedEvent(ROOT), Change("deleted", "", True)),
        (FileCreatedEvent("/other/a.jpg"), None),
    ],
)
def test_watchdog_events_become_changes(event, change):
    assert to_change(event, ROOT) == change


def test_dirty_paths_drop_what_the_scan_would_skip():
    assert dirty_paths(Change("created", "a.jpg"), RELEVANT) == [("a.jpg", False)]
    assert dirty_paths(Change("deleted", "a.JPG"), RELEVANT) == [("a.JPG", True)]
    assert dirty_paths(Change("created", "notes.txt"), RELEVANT) == []
    assert dirty_paths(Change("created", ".hidden/a.jpg"), RELEVANT) == []
    assert dirty_paths(Change("modified", "sub", True), RELEVANT) == []  # a parent's mtime: no work
    assert dirty_paths(Change("deleted", "sub", True), RELEVANT) == [("sub", True)]


def test_an_editor_save_marks_only_the_real_file():
    # write ".a.jpg.swp" / "a.jpg.tmp", then rename it over a.jpg
    assert dirty_paths(Change("moved", "a.jpg.tmp", False, "a.jpg"), RELEVANT) == [("a.jpg", False)]
    assert dirty_paths(Change("created", "a.jpg.tmp"), RELEVANT) == []


def test_a_move_marks_both_ends_as_changes_not_deletes():
    assert dirty_paths(Change("moved", "old", True, "new"), RELEVANT) == [("old", False), ("new", False)]


def test_limit_messages_name_the_sysctl():
    msg = describe_limit(OSError(errno.ENOSPC, "inotify watch limit reached"))
    assert "fs.inotify.max_user_watches" in msg and "sysctl" in msg
    assert "max_user_instances" in describe_limit(OSError(errno.EMFILE, "x"))
    assert describe_limit(OSError(errno.EACCES, "x")) is None


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.trouble: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def sink(self, c: Change) -> None:
        with self.lock:
            self.changes.append(c)

    def report(self, kind: str, detail: str) -> None:
        with self.lock:
            self.trouble.append((kind, detail))

    def has(self, change: Change) -> bool:
        with self.lock:
            return change in self.changes


@pytest.fixture
def watched(tmp_path):
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    rec = Recorder()
    w = FolderWatch(str(folder), rec.sink, rec.report)
    w.start()
    yield folder, rec, w
    w.stop()


def test_a_real_observer_reports_create_move_delete_and_directory_renames(watched):
    folder, rec, w = watched
    (folder / "a.jpg").write_bytes(b"x")
    assert wait_until(lambda: rec.has(Change("created", "a.jpg")))
    (folder / "a.jpg").rename(folder / "sub" / "b.jpg")
    assert wait_until(lambda: rec.has(Change("moved", "a.jpg", False, "sub/b.jpg")))
    (folder / "sub").rename(folder / "renamed")
    assert wait_until(lambda: rec.has(Change("moved", "sub", True, "renamed")))
    (folder / "renamed" / "b.jpg").unlink()
    assert wait_until(lambda: rec.has(Change("deleted", "renamed/b.jpg")))  # the watch followed the rename
    assert w.alive() and rec.trouble == []


def test_deleting_the_root_is_reported_and_stops_the_watch(watched):
    folder, rec, w = watched
    (folder / "sub").rmdir()
    folder.rmdir()
    assert wait_until(lambda: ("root gone", f"{folder} was deleted or unmounted") in rec.trouble)
    assert wait_until(lambda: not w.alive())


class FullInotify:
    """Fault injection: the shared inotify fd, refusing new watches as if max_user_watches were reached."""

    def __init__(self, real, allow: int) -> None:
        self._real = real
        self._allow = allow

    def add_callback(self, path, mask, callback, id_):
        if self._allow <= 0:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        self._allow -= 1
        return self._real.add_callback(path, mask, callback, id_)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_watch_limit_on_the_root_raises_with_the_fix(tmp_path):
    rec = Recorder()
    with _inotify() as real:
        w = FolderWatch(str(tmp_path), rec.sink, rec.report, inotify_fd=FullInotify(real, 0))
        with pytest.raises(WatchLimitError) as e:
            w.start()
    assert "fs.inotify.max_user_watches=" in e.value.strerror
    assert not w.alive()


def test_watch_limit_below_the_root_is_reported_not_swallowed(tmp_path):
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    rec = Recorder()
    with _inotify() as real:
        w = FolderWatch(str(tmp_path), rec.sink, rec.report, inotify_fd=FullInotify(real, 1))
        w.start()  # the root is watched; its subdirectories are not
        try:
            assert rec.trouble and rec.trouble[0][0] == "limit" and "max_user_watches" in rec.trouble[0][1]
            (tmp_path / "top.jpg").write_bytes(b"x")
            assert wait_until(lambda: rec.has(Change("created", "top.jpg")))
        finally:
            w.stop()


@contextlib.contextmanager
def _inotify():  # type: ignore[no-untyped-def]
    """An inotify instance of the test's own (the process-wide shared one never stops its thread)."""
    from watchdog.observers.inotify_c import InotifyFD

    real = InotifyFD()
    real.start()
    try:
        yield real
    finally:
        real.stop()


def test_a_missing_folder_cannot_be_watched(tmp_path):
    w = FolderWatch(str(tmp_path / "nope"), lambda c: None, lambda k, d: None)
    with pytest.raises(FileNotFoundError):
        w.start()


def test_an_inotify_queue_overflow_is_reported(watched):
    """watchdog only logs IN_Q_OVERFLOW; our watch group must tell the daemon (which then rescans).
    The kernel's overflow is simulated by calling the watch group's overflow hook, as InotifyFD does."""
    folder, rec, w = watched
    (emitter,) = w._observer.emitters
    emitter._inotify.on_queue_overflow()
    assert rec.trouble and rec.trouble[-1][0] == "overflow"
    (folder / "after.jpg").write_bytes(b"x")  # the watches were rebuilt: still watching
    assert wait_until(lambda: rec.has(Change("created", "after.jpg")))


def test_the_reporting_hooks_fit_the_installed_watchdog():
    """events.py subclasses watchdog's inotify internals; pyproject pins the range it was written for.
    With that range installed the hooks must be in use (a silent fallback would lose overflow reports)."""
    from imgsync.watch import events

    assert events._MAKE_OBSERVER is not None


def test_without_the_hooks_the_plain_observer_still_delivers_changes(tmp_path, monkeypatch):
    """Another watchdog (or OS) without the internals: events still arrive through the plain Observer;
    overflow and watch limits then go unnoticed until the periodic full scan."""
    from imgsync.watch import events

    monkeypatch.setattr(events, "_MAKE_OBSERVER", None)
    folder = tmp_path / "pics"
    folder.mkdir()
    rec = Recorder()
    w = FolderWatch(str(folder), rec.sink, rec.report)
    w.start()
    try:
        (folder / "a.jpg").write_bytes(b"x")
        assert wait_until(lambda: rec.has(Change("created", "a.jpg")))
        (folder / "a.jpg").rename(folder / "b.jpg")
        assert wait_until(lambda: rec.has(Change("moved", "a.jpg", False, "b.jpg")))
        assert w.alive()
    finally:
        w.stop()
