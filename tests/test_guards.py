"""Delete guards hold on every run, not once: an unmounted, emptied, removed or replaced folder costs
the user no entry however many times reconcile (or the daemon) runs, until the condition clears or
`--force` confirms it. Real folder, real tmpfs mounts (as root), real SQLite, real local gallery."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_image, wait_until
from imgsync.config import MirrorConfig
from imgsync.gallery.client import GalleryClient
from imgsync.manifest import StateLock, Store
from imgsync.pipeline import reconcile_mirror

N = 8  # at most 10 entries: the max_delete guard is off, so only the folder guards protect them
RUNS = 10


class CountingGallery:
    """The real client, with a count of delete calls (a spy: every call goes through)."""

    def __init__(self, client: GalleryClient) -> None:
        self.client = client
        self.deletes = 0

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def delete_many(self, library, cont_signs):
        self.deletes += 1
        return self.client.delete_many(library, cont_signs)


def _mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], capture_output=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True, timeout=30)


class Rig:
    def __init__(self, tmp_path: Path, server, folder: Path) -> None:
        self.folder = folder
        self.state = tmp_path / "state"
        self.store = Store.open(self.state / "manifest.sqlite3")
        self.client = GalleryClient(server.url, server.api_key, server.secret_key)
        self.gallery = CountingGallery(self.client)
        self.server = server
        self.mirror = MirrorConfig(name="m", folder=folder, library="same_hq")

    def put(self, rel: str, seed: int) -> None:
        p = self.folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(make_image(seed))
        os.utime(p, (1_600_000_000, 1_600_000_000))

    def run(self, **kw):
        return reconcile_mirror(self.mirror, self.store, self.gallery, spool_dir=self.state / "spool", **kw)

    def remote(self) -> int:
        from imgsync.localgallery.engine import Engine

        eng = Engine(self.server.data_dir, read_only=True)
        try:
            return len(list(eng.entries("same_hq")))
        finally:
            eng.close()

    def close(self) -> None:
        self.client.close()
        self.store.close()


def _empty(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()


def _remove(folder: Path) -> None:
    shutil.rmtree(folder)


def _replace_by_file(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.write_bytes(b"a file where the folder was")


CONDITIONS: dict[str, Callable[[Path], None]] = {
    "emptied": _empty,
    "removed": _remove,
    "replaced by a file": _replace_by_file,
}


@pytest.fixture
def mounted(tmp_path) -> Iterator[Path]:
    where = tmp_path / "disk"
    if not _mount_tmpfs(where):
        pytest.skip("cannot mount a tmpfs here (needs root); the other folder conditions still run")
    try:
        yield where
    finally:
        while os.path.ismount(where):
            _umount(where)


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_a_guard_withholds_deletes_on_every_run_until_forced(tmp_path, gallery_server, condition):
    rig = Rig(tmp_path, gallery_server, tmp_path / "pics")
    try:
        for i in range(N):
            rig.put(f"img{i}.jpg", i)
        assert len(rig.run().report.added) == N
        CONDITIONS[condition](rig.folder)
        for _ in range(RUNS):
            run = rig.run()
            assert run.report.withheld_reason or run.report.folder_problem
            assert run.report.deleted == 0
        assert rig.gallery.deletes == 0 and rig.remote() == N
        assert rig.store.counts("m")["entries"] == N

        run = rig.run(force=True)  # the user confirms once: exactly the entries that are gone go
        assert run.report.deleted == N and rig.remote() == 0
        # Done as asked, and the manifest says so: no file of the folder is left waiting for its entry.
        assert run.report.ok and (run.report.folder_removed is not None) == (condition != "emptied")
        assert rig.store.counts("m")["files"] == rig.store.counts("m")["entries"] == 0
    finally:
        rig.close()


def test_an_unmounted_disk_keeps_its_entries_until_it_is_back_or_forced(tmp_path, gallery_server, mounted):
    rig = Rig(tmp_path, gallery_server, mounted)
    try:
        for i in range(N):
            rig.put(f"img{i}.jpg", i)
        assert len(rig.run().report.added) == N
        _umount(mounted)  # the mount point stays: an empty directory on the parent's disk
        for _ in range(RUNS):
            run = rig.run()
            assert "another disk" in (run.report.withheld_reason or "") and run.report.deleted == 0
        # Something writes 3 of the pictures into the bare mount point: still not the disk synced last time.
        for i in range(3):
            rig.put(f"img{i}.jpg", i)
        for _ in range(3):
            assert rig.run().report.deleted == 0
        assert rig.gallery.deletes == 0 and rig.remote() == N

        # Another disk mounted there (the kernel may reuse the device number; the filesystem id differs).
        assert _mount_tmpfs(mounted)
        for i in range(N):
            rig.put(f"img{i}.jpg", i)
        for _ in range(3):
            run = rig.run()
            assert run.report.withheld_reason is None and run.report.deleted == 0  # nothing to delete
        _umount(mounted)
        for i in range(3):
            rig.put(f"img{i}.jpg", i)
        assert rig.run().report.deleted == 0 and rig.gallery.deletes == 0 and rig.remote() == N
        run = rig.run(force=True)  # confirmed: exactly the 5 pictures that are gone are deleted
        assert run.report.deleted == N - 3 and rig.remote() == 3
        assert rig.run().report.withheld_reason is None  # this folder is now the one in step
    finally:
        rig.close()


# --------------------------------------------------------------------------- the command line


def _invoke(state: Path, config: Path, *args: str):
    return CliRunner().invoke(
        cli_group(), ["--state-dir", str(state), "--config", str(config), *args], catch_exceptions=False
    )


def cli_group():
    from imgsync.cli import cli

    return cli


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_reconcile_and_doctor_agree_on_exit_6_for_each_condition(tmp_path, condition):
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(make_image(i))
        os.utime(folder / f"{i}.jpg", (1_600_000_000, 1_600_000_000))
    config = tmp_path / "config.toml"
    config.write_text(f'[[mirror]]\nname = "m"\nfolder = "{folder}"\n')
    state = tmp_path / "state"
    assert _invoke(state, config, "reconcile").exit_code == 0
    CONDITIONS[condition](folder)
    for _ in range(3):
        result = _invoke(state, config, "reconcile")
        assert result.exit_code == 6, result.output
    doctor = _invoke(state, config, "doctor")
    assert doctor.exit_code == 6, doctor.output
    status = _invoke(state, config, "status", "--json")
    assert '"synced": 3' in status.output  # nothing forgotten


def test_a_typo_folder_is_a_usage_error_that_leaves_no_mirror_behind(tmp_path):
    from imgsync.cli import cli

    state = tmp_path / "state"
    result = CliRunner().invoke(cli, ["--state-dir", str(state), "reconcile", str(tmp_path / "typo" / "path")])
    assert result.exit_code == 2 and "neither a mirror nor an existing folder" in result.output
    status = CliRunner().invoke(cli, ["--state-dir", str(state), "status"], catch_exceptions=False)
    assert "no mirrors yet" in status.output


# --------------------------------------------------------------------------- the daemon


@pytest.mark.parametrize("condition", ["emptied", "unmounted", "removed", "replaced by a file"])
def test_the_daemon_deletes_nothing_while_a_condition_lasts(tmp_path, gallery_server, condition):
    from imgsync.watch.daemon import Daemon
    from imgsync.watch.debounce import Timing

    if condition == "unmounted":
        folder = tmp_path / "disk"
        if not _mount_tmpfs(folder):
            pytest.skip("cannot mount a tmpfs here (needs root)")
    else:
        folder = tmp_path / "pics"
        folder.mkdir()
    rig = Rig(tmp_path, gallery_server, folder)
    state_lock = StateLock(rig.state)
    state_lock.acquire()
    runs: list = []
    # Full scans every half second: many chances to get it wrong in a short test.
    timing = Timing(quiet=0.2, delete_quiet=0.4, max_delay=2.0, min_age=0.2, full_scan_interval=0.5, jitter=0.0)
    daemon = Daemon(
        [rig.mirror],
        rig.store,
        rig.gallery,
        state_dir=rig.state,
        timing=timing,
        root_check=0.2,
        on_run=lambda name, work, run: runs.append((work, run)),
    )
    thread = threading.Thread(target=daemon.run, daemon=True)
    try:
        for i in range(N):
            rig.put(f"img{i}.jpg", i)
        thread.start()
        wait_until(lambda: rig.remote() == N, what="the start-up scan's adds")
        before = len(runs)
        if condition == "unmounted":
            _umount(folder)
        else:
            CONDITIONS[condition](folder)
        if condition in ("removed", "replaced by a file"):
            from imgsync.watch.statusfile import read_status

            def paused() -> bool:
                s = read_status(rig.state) or {}
                return bool((s.get("mirrors") or {}).get("m", {}).get("paused"))

            wait_until(paused, what="the daemon to pause the folder")
            # The folder is checked every 0.2 s: let it look many times (a bounded period, not a condition).
            checks = daemon.heartbeat
            wait_until(lambda: daemon.heartbeat > checks + 2.0, what="two seconds of folder checks")
        else:
            wait_until(
                lambda: sum(1 for w, _ in runs[before:] if w.is_full) >= 6,
                timeout=60,
                what="six full scans after the change",
            )
        assert all(run.report.deleted == 0 for _, run in runs)
        assert rig.gallery.deletes == 0 and rig.remote() == N
    finally:
        daemon.stop()
        thread.join(timeout=20)
        state_lock.release()
        rig.close()
        if os.path.ismount(folder):
            _umount(folder)
