"""The watch daemon end to end: a real watchdog observer on a temp folder, the real pipeline, a real
SQLite manifest and the real local gallery over HTTP. Outcomes are polled with generous deadlines;
nothing asserts on timing."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from conftest import make_image, wait_until
from imgsync.config import MirrorConfig
from imgsync.gallery.client import GalleryClient
from imgsync.gallery.retry import RetryPolicy
from imgsync.manifest import StateLock, Store
from imgsync.watch.daemon import Daemon
from imgsync.watch.debounce import Backoff, Timing
from imgsync.watch.statusfile import read_status

# Shorter than the defaults (1 s quiet, 1 s min age) to keep the suite quick; same logic.
FAST = Timing(quiet=0.3, delete_quiet=0.8, max_delay=3.0, min_age=0.3, retry_base=0.3, retry_cap=2.0)


class DaemonRig:
    def __init__(self, tmp_path: Path, server, timing: Timing = FAST, others: tuple[str, ...] = ()) -> None:
        """One mirror "m" of tmp/pics, and one more per name in `others` (folder tmp/<name>)."""
        self.tmp = tmp_path
        self.folder = tmp_path / "pics"
        self.folder.mkdir()
        self.others = {name: MirrorConfig(name=name, folder=tmp_path / name, library="same_hq") for name in others}
        for other in self.others.values():
            other.folder.mkdir()
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.state_lock = StateLock(self.state)  # as `imgsync watch` does: status checks who holds it
        self.state_lock.acquire()
        self.server = server
        self.store = Store.open(self.state / "manifest.sqlite3")
        self.client = self._client()
        self.mirror = MirrorConfig(name="m", folder=self.folder, library="same_hq")
        self.runs: list = []
        self.lock = threading.Lock()
        self.daemon = Daemon(
            [self.mirror, *self.others.values()],
            self.store,
            self.client,
            state_dir=self.state,
            timing=timing,
            gallery_backoff=Backoff(0.5, 2.0),
            root_check=0.3,
            on_run=self._record,
        )
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)

    def _client(self) -> GalleryClient:
        return GalleryClient(
            self.server.url,
            self.server.api_key,
            self.server.secret_key,
            retry=RetryPolicy(attempts=2, base=0.05, cap=0.1),
            timeout=(2.0, 10.0),
        )

    def _record(self, name, work, run) -> None:
        with self.lock:
            self.runs.append((work, run))

    def start(self) -> DaemonRig:
        self.thread.start()
        wait_until(lambda: any(w.is_full for w, _ in self.snapshot_runs()), what="the start-up full scan")
        return self

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()

    def snapshot_runs(self) -> list:
        with self.lock:
            return list(self.runs)

    def total(self, field: str) -> int:
        out = 0
        for _, run in self.snapshot_runs():
            value = getattr(run.report, field)
            out += len(value) if isinstance(value, list) else value
        return out

    def write(self, rel: str, seed: int) -> Path:
        p = self.folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(make_image(seed))
        return p

    def remote(self) -> list[str]:
        """The briefs in the gallery, read from its own storage (not through our client)."""
        from imgsync.localgallery.engine import Engine

        eng = Engine(self.server.data_dir, read_only=True)
        try:
            return sorted(str(e["brief"]) for e in eng.entries("same_hq"))
        finally:
            eng.close()

    def remote_paths(self) -> list[str]:
        import json

        return sorted(json.loads(b)["path"] for b in self.remote())

    def converged(self, paths: list[str]) -> bool:
        """The gallery holds exactly `paths` and the daemon is idle: every run's outcome is recorded."""
        return self.remote_paths() == sorted(paths) and self.daemon.idle()

    def reconcile_calls(self) -> int:
        """A full reconcile after the daemon stopped: how many gallery calls it still makes."""
        from imgsync.pipeline import reconcile_mirror

        before = self.client.stats.requests
        run = reconcile_mirror(self.mirror, self.store, self.client, spool_dir=self.state / "spool")
        assert run.report.ok
        return self.client.stats.requests - before


@pytest.fixture
def rig(tmp_path, gallery_server):
    r = DaemonRig(tmp_path, gallery_server)
    yield r
    if r.thread.is_alive():
        r.stop()
    r.client.close()
    r.store.close()
    r.state_lock.release()


def test_a_file_refused_as_another_mirrors_image_is_added_once_that_file_is_deleted(tmp_path, gallery_server):
    """Mirror "copy" holds a copy of a picture that mirror "m" already added: refused (the gallery holds that
    image once, as m's). Deleting m's file deletes the entry, and the daemon judges copy's file again at
    once, not at copy's next periodic full scan (an hour by default; here the test would time out)."""
    r = DaemonRig(tmp_path, gallery_server, others=("copy",))
    try:
        for i, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):  # not the folder's only file: see the delete guards
            r.write(name, 7 + i)
        r.start()
        wait_until(lambda: r.converged(["a.jpg", "b.jpg", "c.jpg"]), what="m's pictures added")
        # An old file moved in: a young one refused is looked at again anyway (it may be a copy in progress).
        staged = tmp_path / "a copy.jpg"
        staged.write_bytes(make_image(7))
        os.utime(staged, (1_600_000_000, 1_600_000_000))
        staged.rename(tmp_path / "copy" / staged.name)
        taken = Store.open(r.state / "manifest.sqlite3")
        try:
            wait_until(lambda: taken.rejected_files("copy") != [], what="the copy refused as m's image")
            (r.folder / "a.jpg").unlink()
            wait_until(
                lambda: r.converged(["a copy.jpg", "b.jpg", "c.jpg"]), what="the copy added once m's entry is gone"
            )
            assert taken.rejected_files("copy") == []
        finally:
            taken.close()
    finally:
        if r.thread.is_alive():
            r.stop()
        r.client.close()
        r.store.close()
        r.state_lock.release()


def test_a_dropped_file_is_added_and_a_burst_of_changes_converges(rig):
    rig.write("old.jpg", 1)
    os.utime(rig.folder / "old.jpg", (1_600_000_000, 1_600_000_000))
    rig.start()
    wait_until(lambda: rig.remote_paths() == ["old.jpg"], what="the start-up scan's add")
    for i in range(10):
        rig.write(f"burst/{i}.jpg", 100 + i)
    for i in range(0, 10, 3):
        rig.write(f"burst/{i}.jpg", 200 + i)  # modified again at once
    (rig.folder / "burst" / "9.jpg").unlink()
    (rig.folder / "old.jpg").rename(rig.folder / "renamed.jpg")
    expected = ["renamed.jpg"] + [f"burst/{i}.jpg" for i in range(9)]
    wait_until(lambda: rig.converged(expected), what="the burst to be mirrored")
    rig.stop()
    assert rig.total("failed") == 0
    assert rig.reconcile_calls() == 0


def test_a_directory_rename_costs_updates_and_no_upload(rig):
    for i in range(4):
        rig.write(f"album/{i}.jpg", 10 + i)
    rig.start()
    wait_until(lambda: rig.converged([f"album/{i}.jpg" for i in range(4)]), what="the album's adds")
    added = rig.total("added")
    (rig.folder / "album").rename(rig.folder / "trip")
    wait_until(lambda: rig.converged([f"trip/{i}.jpg" for i in range(4)]), what="the rename")
    assert rig.total("added") == added  # no re-upload
    assert rig.total("updated") == 4 and rig.total("deleted") == 0
    rig.stop()
    assert rig.reconcile_calls() == 0


def test_a_file_written_slowly_is_uploaded_once_and_whole(rig, caplog):
    rig.start()
    data = make_image(7, size=(640, 480))
    p = rig.folder / "slow.jpg"
    with open(p, "wb") as f:
        for i in range(0, len(data), len(data) // 8 + 1):
            f.write(data[i : i + len(data) // 8 + 1])
            f.flush()
            time.sleep(0.4)  # slower than the quiet period: the daemon must not take a half file
    wait_until(lambda: rig.converged(["slow.jpg"]), what="the slow file and its retries")
    assert rig.total("added") == 1  # never uploaded half-way, uploaded exactly once
    rig.stop()
    import hashlib

    known = rig.store.known_files("m")["slow.jpg"]
    assert known.verdict == "ok" and known.content_hash == hashlib.sha256(data).hexdigest()
    # A half-written JPEG may be judged "truncated" along the way: that is looked at again, not reported.
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "rejected slow.jpg" in r.message]


def test_an_editor_style_atomic_save_is_one_change(rig):
    rig.write("doc.jpg", 1)
    rig.start()
    wait_until(lambda: rig.remote_paths() == ["doc.jpg"], what="the first version")
    tmp = rig.folder / ".doc.jpg.tmp"
    tmp.write_bytes(make_image(2))
    os.replace(tmp, rig.folder / "doc.jpg")
    wait_until(lambda: rig.total("added") == 2 and rig.daemon.idle(), what="the saved version")
    assert rig.remote_paths() == ["doc.jpg"]  # the old image went, the new one came: still one entry
    rig.stop()
    assert rig.reconcile_calls() == 0


def test_a_vanished_root_pauses_without_deleting_and_resumes(rig):
    rig.write("a.jpg", 1)
    rig.write("b.jpg", 2)
    rig.start()
    wait_until(lambda: len(rig.remote()) == 2, what="the adds")
    away = rig.tmp / "unmounted"
    rig.folder.rename(away)
    wait_until(
        lambda: (read_status(rig.state) or {}).get("mirrors", {}).get("m", {}).get("paused"),
        what="the pause to be published",
    )
    status = read_status(rig.state)
    assert status["running"] and "does not exist" in status["mirrors"]["m"]["paused"]
    time.sleep(1.0)
    assert len(rig.remote()) == 2 and rig.total("deleted") == 0  # nothing deleted
    away.rename(rig.folder)
    rig.write("c.jpg", 3)  # a change made while away... (written after the folder is back)
    wait_until(lambda: rig.converged(["a.jpg", "b.jpg", "c.jpg"]), what="the resume")
    wait_until(lambda: not read_status(rig.state)["mirrors"]["m"]["paused"], what="the resume to be published")
    (rig.folder / "d.jpg").write_bytes(make_image(4))  # watched again
    wait_until(lambda: "d.jpg" in rig.remote_paths(), what="the watcher to be back")
    assert rig.total("deleted") == 0


def test_a_gallery_that_goes_away_keeps_the_queue_and_resumes(rig, gallery_server):
    from imgsync.localgallery.server import start_in_thread

    rig.start()
    port = int(gallery_server.url.rsplit(":", 1)[1].split("/")[0])
    gallery_server.stop()
    rig.write("a.jpg", 1)
    rig.write("b.jpg", 2)
    wait_until(lambda: (read_status(rig.state) or {}).get("gallery"), what="the gallery pause")
    assert "gallery" in read_status(rig.state)["last_error"]
    assert not rig.daemon.idle()  # the changes are kept: queued, or in a run that retries them
    again = start_in_thread(
        gallery_server.data_dir, host="127.0.0.1", port=port, keys=[("test-ak", "test-sk")], allow_private_urls=True
    )
    try:
        wait_until(lambda: rig.converged(["a.jpg", "b.jpg"]), what="the queue after the gallery came back")
        wait_until(lambda: read_status(rig.state)["gallery"] is None, what="the pause to end")
        rig.stop()
        assert rig.reconcile_calls() == 0
    finally:
        again.stop()


def test_stop_writes_a_final_status(rig):
    rig.start()
    rig.stop()
    status = read_status(rig.state)
    assert status["running"] is False and status["pid"] == os.getpid() and "stale" not in status


@pytest.mark.slow
def test_churn_ends_with_the_library_equal_to_the_folder(tmp_path, gallery_server):
    """lsyncd's churn test: random creates, rewrites, moves, directory moves and deletes for a while,
    then the gallery holds exactly the folder's images and a full reconcile makes no call."""
    rig = DaemonRig(tmp_path, gallery_server)
    rng = random.Random(4)
    try:
        rig.start()
        seed = 1000
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            files = [p for p in rig.folder.rglob("*.jpg")]
            dirs = [d for d in rig.folder.rglob("*") if d.is_dir()]
            op = rng.random()
            if op < 0.4 or not files:
                seed += 1
                rig.write(f"d{rng.randrange(4)}/f{seed}.jpg", seed)
            elif op < 0.55:
                seed += 1
                rng.choice(files).write_bytes(make_image(seed))
            elif op < 0.7:
                src = rng.choice(files)
                dst = rig.folder / f"d{rng.randrange(4)}" / f"m{seed}_{src.name}"
                dst.parent.mkdir(exist_ok=True)
                src.rename(dst)
            elif op < 0.78 and dirs:
                d = rng.choice(dirs)
                target = rig.folder / f"moved{seed}"
                if not target.exists() and d != rig.folder:
                    d.rename(target)
            else:
                rng.choice(files).unlink()
            time.sleep(rng.uniform(0, 0.08))
        images = sorted(p.relative_to(rig.folder).as_posix() for p in rig.folder.rglob("*.jpg"))
        # Identical bytes share one entry; this churn never makes two files with the same content.
        wait_until(lambda: rig.converged(images), timeout=90, what="the churn to settle")
        rig.stop()
        assert rig.reconcile_calls() == 0
    finally:
        if rig.thread.is_alive():
            rig.stop()
        rig.client.close()
        rig.store.close()
        rig.state_lock.release()


def test_a_dead_watcher_or_an_overflow_triggers_a_full_scan_that_finds_what_was_missed(rig):
    rig.start()
    rig.daemon._slots["m"].watch.stop()  # the watcher dies: events are lost from here on
    rig.write("missed.jpg", 1)
    wait_until(lambda: rig.converged(["missed.jpg"]), what="the full scan after the restart")
    assert any(w.is_full and w.reason == "watcher restarted" for w, _ in rig.snapshot_runs())
    wait_until(lambda: rig.daemon._slots["m"].watch is not None, what="the new watcher")
    (emitter,) = rig.daemon._slots["m"].watch._observer.emitters
    emitter._inotify.on_queue_overflow()  # the kernel dropped events (as InotifyFD reports it)
    wait_until(
        lambda: any(w.is_full and w.reason == "watcher overflow" for w, _ in rig.snapshot_runs()),
        what="the full scan after the overflow",
    )
    rig.stop()
    assert rig.reconcile_calls() == 0
