"""reconcile end to end: real folder, real SQLite manifest, real local gallery over HTTP."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import make_image
from imgsync.config import MirrorConfig
from imgsync.gallery.client import GalleryClient
from imgsync.manifest import Store
from imgsync.pipeline import reconcile_mirror


class Rig:
    def __init__(self, tmp_path: Path, server) -> None:
        self.folder = tmp_path / "pics"
        self.folder.mkdir()
        self.state = tmp_path / "state"
        self.server = server
        self.store = Store.open(self.state / "manifest.sqlite3")
        self.client = GalleryClient(server.url, server.api_key, server.secret_key)
        self.mirror = MirrorConfig(name="m", folder=self.folder, library="same_hq")

    def put(self, rel: str, seed: int) -> Path:
        p = self.folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(make_image(seed))
        t = os.stat(p).st_mtime_ns - 10**10  # old enough to be stable
        os.utime(p, ns=(t, t))
        return p

    def run(self, **kw):
        before = self.client.stats.requests
        run = reconcile_mirror(self.mirror, self.store, self.client, spool_dir=self.state / "spool", **kw)
        return run, self.client.stats.requests - before

    def remote(self) -> list[tuple[str, str]]:
        from imgsync.localgallery.engine import Engine

        eng = Engine(self.server.data_dir, read_only=True)
        try:
            return sorted((e["cont_sign"], e["brief"]) for e in eng.entries("same_hq"))
        finally:
            eng.close()


@pytest.fixture
def rig(tmp_path, gallery_server):
    r = Rig(tmp_path, gallery_server)
    yield r
    r.client.close()
    r.store.close()


def test_first_run_adds_each_distinct_image_once_and_second_run_makes_no_call(rig):
    rig.put("a.jpg", 1)
    rig.put("sub/b.jpg", 2)
    (rig.folder / "copy.jpg").write_bytes((rig.folder / "a.jpg").read_bytes())
    run, calls = rig.run()
    assert len(run.report.added) == 2 and run.report.ok
    assert len(rig.remote()) == 2
    run, calls = rig.run()
    assert calls == 0 and run.plan.is_empty


def test_rename_is_one_update_and_no_upload(rig):
    rig.put("a.jpg", 1)
    rig.run()
    (rig.folder / "a.jpg").rename(rig.folder / "renamed.jpg")
    run, calls = rig.run()
    assert run.report.updated == ["renamed.jpg"] and run.report.added == [] and calls == 1
    assert [b for _, b in rig.remote()] == ['{"id":1,"path":"renamed.jpg"}']


def test_changed_and_deleted_files(rig):
    rig.put("a.jpg", 1)
    rig.put("b.jpg", 2)
    rig.put("c.jpg", 3)
    rig.run()
    rig.put("a.jpg", 11)  # content changed
    (rig.folder / "b.jpg").unlink()
    run, _ = rig.run()
    assert run.report.added == ["a.jpg"] and run.report.deleted == 2
    assert len(rig.remote()) == 2


def test_bad_images_are_rejected_with_a_reason_and_nothing_uploaded(rig):
    rig.put("good.jpg", 1)
    (rig.folder / "broken.jpg").write_bytes(make_image(2)[:500])
    (rig.folder / "tiny.png").write_bytes(make_image(3, size=(20, 20), fmt="PNG"))
    for name in ("broken.jpg", "tiny.png"):
        t = os.stat(rig.folder / name).st_mtime_ns - 10**10
        os.utime(rig.folder / name, ns=(t, t))
    run, _ = rig.run()
    rejected = dict(run.report.rejected)
    assert set(rejected) == {"broken.jpg", "tiny.png"} and all(rejected.values())
    assert len(rig.remote()) == 1


def test_crash_after_the_add_reached_the_gallery_is_adopted_not_duplicated(rig):
    rig.put("a.jpg", 1)

    class CrashAfterAdd(RuntimeError):
        pass

    real_finish = rig.store.finish_add

    def crash(*a, **k):  # fault injection: the process "dies" after the remote add, before recording it
        raise CrashAfterAdd()

    rig.store.finish_add = crash
    with pytest.raises(CrashAfterAdd):
        rig.run()
    rig.store.finish_add = real_finish
    assert len(rig.remote()) == 1 and len(rig.store.open_journal()) == 1
    run, _ = rig.run()
    assert run.report.recovered == 1 and rig.store.open_journal() == []
    assert len(rig.remote()) == 1  # no duplicate
    run, calls = rig.run()
    assert calls == 0


def test_missing_folder_deletes_nothing(rig):
    rig.put("a.jpg", 1)
    rig.run()
    moved = rig.folder.with_name("elsewhere")
    rig.folder.rename(moved)
    run, calls = rig.run()
    assert "does not exist" in run.report.folder_problem and calls == 0
    assert run.report.withheld == 1 and len(rig.remote()) == 1


def test_emptied_folder_withholds_deletes_until_forced(rig):
    rig.put("a.jpg", 1)
    rig.run()
    (rig.folder / "a.jpg").unlink()
    run, _ = rig.run()
    assert run.report.withheld_reason and len(rig.remote()) == 1
    run, _ = rig.run(force=True)
    assert run.report.deleted == 1 and rig.remote() == []


# --- scoped runs (the watch daemon re-examines only what its events marked dirty) -----------------


def test_scoped_run_sees_only_its_scope_and_keeps_the_rest(rig):
    rig.put("a.jpg", 1)
    rig.put("dir/b.jpg", 2)
    rig.run()
    rig.put("new.jpg", 3)  # outside the scope: not seen yet
    rig.put("dir/c.jpg", 4)  # inside
    (rig.folder / "a.jpg").unlink()  # outside: a scoped run must not take it as gone
    run, calls = rig.run(scope=["dir"])
    assert run.report.added == ["dir/c.jpg"] and run.report.deleted == 0 and calls == 1
    assert set(rig.store.known_files("m")) == {"a.jpg", "dir/b.jpg", "dir/c.jpg"}
    run, _ = rig.run()  # the full scan is the truth
    assert run.report.added == ["new.jpg"] and run.report.deleted == 1


def test_scoped_move_pairs_into_one_update(rig):
    rig.put("old/a.jpg", 1)
    rig.put("old/b.jpg", 2)
    rig.run()
    (rig.folder / "old").rename(rig.folder / "new")
    run, calls = rig.run(scope=["old", "new"])
    assert sorted(run.report.updated) == ["new/a.jpg", "new/b.jpg"] and run.report.added == []
    assert calls == 2 and run.report.deleted == 0
    run, calls = rig.run()
    assert calls == 0 and run.plan.is_empty


def test_scoped_run_of_a_deleted_file_deletes_its_entry(rig):
    rig.put("a.jpg", 1)
    rig.put("b.jpg", 2)
    rig.put("c.jpg", 3)
    rig.run()
    (rig.folder / "b.jpg").unlink()
    run, calls = rig.run(scope=["b.jpg", "./b.jpg", "zzz/none.jpg"])
    assert run.report.deleted == 1 and calls == 1
    assert len(rig.remote()) == 2


def test_scoped_run_respects_excludes_and_symlinks(rig, tmp_path):
    rig.mirror = MirrorConfig(name="m", folder=rig.folder, library="same_hq", exclude=("skip",))
    rig.put("skip/a.jpg", 1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.jpg").write_bytes(make_image(5))
    os.symlink(outside, rig.folder / "link")
    run, calls = rig.run(scope=["skip/a.jpg", "skip", "link", "link/o.jpg"])
    assert calls == 0 and run.report.added == []


def test_fresh_file_waits_for_min_age(rig):
    p = rig.folder / "fresh.jpg"
    p.write_bytes(make_image(1))  # mtime = now
    run, calls = rig.run(scope=["fresh.jpg"], settle=None)  # the daemon's run: it debounces, never waits
    assert calls == 0
    assert rig.store.known_files("m")["fresh.jpg"].verdict == "unstable"
    run, calls = rig.run(scope=["fresh.jpg"], min_age_ns=0)
    assert run.report.added == ["fresh.jpg"] and calls == 1


def test_moving_a_file_out_of_its_tag_rule_clears_its_tags_remotely(rig):
    from imgsync.config import LabelRule
    from imgsync.localgallery.engine import Engine

    rig.mirror = MirrorConfig(name="m", folder=rig.folder, library="same_hq", labels=(LabelRule("shoes/*", (7,)),))
    rig.put("shoes/a.jpg", 1)
    rig.run()
    (rig.folder / "shoes" / "a.jpg").rename(rig.folder / "a.jpg")
    run, calls = rig.run()
    assert run.report.updated == ["a.jpg"] and calls == 2 and run.report.ok

    def remote_tags():
        eng = Engine(rig.server.data_dir, read_only=True)
        try:
            return [(e["tags"], e["brief"]) for e in eng.entries("same_hq")]
        finally:
            eng.close()

    [(tags, brief)] = remote_tags()
    assert tags == [] and '"path":"a.jpg"' in brief
    run, calls = rig.run()
    assert calls == 0 and run.plan.is_empty


def test_a_refused_batch_delete_falls_back_to_one_call_per_entry(rig):
    from imgsync.errors import GalleryRejectedError

    class NoBatches:  # fault injection: a gallery that refuses the batch form of delete
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def delete_many(self, library, cont_signs):
            if len(cont_signs) > 1:
                raise GalleryRejectedError("216100 invalid param (injected: batch refused)")
            return self.inner.delete_many(library, cont_signs)

    for i in range(3):
        rig.put(f"{i}.jpg", i)
    rig.run()
    for i in range(3):
        (rig.folder / f"{i}.jpg").unlink()
    run = reconcile_mirror(rig.mirror, rig.store, NoBatches(rig.client), spool_dir=rig.state / "spool", force=True)
    assert run.report.deleted == 3 and run.report.stopped is None
    assert rig.remote() == [] and rig.store.open_journal() == []


# --- the no-op fast path: one stat walk vouches for a settled mirror -----------------------------


def test_settled_mirror_is_vouched_for_by_a_stat_walk_and_any_change_breaks_it(rig):
    from imgsync.config import LabelRule
    from imgsync.settled import settled_fingerprint

    rig.put("a.jpg", 1)
    rig.put("sub/b.jpg", 2)
    (rig.folder / "bad.jpg").write_bytes(b"not an image")
    t = os.stat(rig.folder / "bad.jpg").st_mtime_ns - 10**10
    os.utime(rig.folder / "bad.jpg", ns=(t, t))
    rig.run()
    state = rig.store.mirror_state("m")
    assert state.settled and state.settled.startswith(settled_fingerprint(rig.mirror) + ":")
    run, calls = rig.run()
    assert calls == 0 and run.plan.is_empty and [p for p, _ in run.report.rejected] == ["bad.jpg"]
    assert rig.store.mirror_state("m").settled == state.settled  # still vouched for

    os.utime(rig.folder / "sub" / "b.jpg", ns=(t - 10**9, t - 10**9))  # same bytes, other mtime: re-read
    run, calls = rig.run()
    assert calls == 0 and rig.store.mirror_state("m").settled != state.settled

    rig.put("sub/c.jpg", 3)  # a new file breaks the digest
    run, calls = rig.run()
    assert run.report.added == ["sub/c.jpg"]
    rig.mirror = MirrorConfig(name="m", folder=rig.folder, library="same_hq", labels=(LabelRule("sub/*", (4,)),))
    run, calls = rig.run()  # a config change breaks the fingerprint
    assert sorted(run.report.updated) == ["sub/b.jpg", "sub/c.jpg"] and calls == 2


def test_a_run_that_does_not_end_clean_leaves_no_settled_mark(rig):
    rig.put("a.jpg", 1)
    fresh = rig.folder / "fresh.jpg"
    fresh.write_bytes(make_image(2))
    ahead = os.stat(fresh).st_mtime_ns + 60 * 10**9  # "modified" a minute from now: cannot settle in this run
    os.utime(fresh, ns=(ahead, ahead))
    run, _ = rig.run()
    assert run.report.pending and rig.store.mirror_state("m").settled is None
    t = time.time_ns() - 10**10
    os.utime(fresh, ns=(t, t))
    run, _ = rig.run()
    assert run.report.added == ["fresh.jpg"] and rig.store.mirror_state("m").settled
    rig.run(scope=["a.jpg"])  # any other run clears the mark first
    assert rig.store.mirror_state("m").settled is None


def test_a_duplicate_answer_naming_an_entry_we_just_deleted_is_retried_not_adopted(rig):
    """The cloud may take hours to carry out a delete (picturebook: up to ~4 h). A file put back in that
    window gets a duplicate answer naming the dying entry: adopting it would record an entry that is
    about to vanish, so the add waits for a later run."""
    from imgsync.errors import GalleryDuplicateError

    class SlowDeletes:  # fault injection: deletes are accepted but take effect later
        def __init__(self, inner):
            self.inner, self.dying = inner, set()

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def delete_many(self, library, cont_signs):
            self.dying |= set(cont_signs)

        def add(self, library, *, image, **kw):
            from imgsync.localgallery.images import cont_sign_of

            if cont_sign_of(image) in self.dying:
                raise GalleryDuplicateError("216681 item has existed", code=216681, cont_sign=cont_sign_of(image))
            return self.inner.add(library, image=image, **kw)

        def finish_deletes(self):
            self.inner.delete_many("same_hq", sorted(self.dying))
            self.dying.clear()

    gallery = SlowDeletes(rig.client)

    def run():
        return reconcile_mirror(rig.mirror, rig.store, gallery, spool_dir=rig.state / "spool", force=True)

    p = rig.put("a.jpg", 1)
    data = p.read_bytes()
    run()
    p.unlink()
    assert run().report.deleted == 1
    p.write_bytes(data)  # put back while the gallery is still deleting it
    t = os.stat(p).st_mtime_ns - 10**10
    os.utime(p, ns=(t, t))
    again = run()
    assert again.report.added == [] and [x for x, _ in again.report.failed] == ["a.jpg"]
    assert "deleted lately" in again.report.failed[0][1] and rig.store.entries("m") == {}
    gallery.finish_deletes()  # the delete takes effect
    done = run()
    assert done.report.added == ["a.jpg"] and len(rig.remote()) == 1


def test_bind_gallery_binds_on_first_use_and_refuses_another_gallery(rig):
    from imgsync.errors import GalleryChangedError
    from imgsync.pipeline import bind_gallery

    rig.put("a.jpg", 1)
    rig.run()
    assert rig.store.setting("gallery") is None  # a manifest from before the binding was recorded
    assert bind_gallery(rig.store, "local#one") == 0 and rig.store.setting("gallery") == "local#one"
    assert bind_gallery(rig.store, "local#one") == 0
    with pytest.raises(GalleryChangedError, match="records 1 entries .* --rebind"):
        bind_gallery(rig.store, "https://aip.baidubce.com#two")
    assert len(rig.store.entries("m")) == 1  # refusing changed nothing
    assert bind_gallery(rig.store, "https://aip.baidubce.com#two", rebind=True) == 1
    assert rig.store.entries("m") == {} and rig.store.known_files("m")["a.jpg"].entry_id is None
    assert rig.store.setting("gallery") == "https://aip.baidubce.com#two"


def test_should_stop_ends_the_run_between_actions_and_the_next_run_finishes(rig):
    for i in range(12):
        rig.put(f"{i}.jpg", i)
    done: list[int] = []
    in_flight = rig.client.calls_in_flight()
    assert in_flight > 1
    run = reconcile_mirror(
        rig.mirror,
        rig.store,
        rig.client,
        spool_dir=rig.state / "spool",
        on_progress=done.append,
        should_stop=lambda: len(done) >= 2,
    )
    # No new call after the stop; the ones in flight then finish and are recorded.
    first = len(run.report.added)
    assert run.report.interrupted and 2 <= first <= 2 + in_flight - 1 and not run.report.ok
    assert len(done) == first and len(rig.remote()) == first
    state = rig.store.mirror_state("m")  # None: the walk was cut short (its adds started while it ran)
    assert rig.store.last_run("m").status == "interrupted" and (state is None or state.settled is None)
    assert rig.store.open_journal() == []  # stopped between actions, never inside one
    run, calls = rig.run()
    assert len(run.report.added) == 12 - first and len(rig.remote()) == 12


# --------------------------------------------------------------------------- early adds


def test_adds_start_while_the_walk_still_runs(rig, monkeypatch):
    """A folder of new images: the first calls are made before the scan has read the last file (the
    walk cannot finish first: with more files than calls in flight, it waits for a call to end)."""
    import imgsync.pipeline as pipeline

    n = rig.client.calls_in_flight() + 8
    for i in range(n):
        rig.put(f"d{i % 3}/{i}.jpg", i)
    walked: list[bool] = []
    real_scan = pipeline.scan_folder

    def scan_folder(*args, **kwargs):
        result = real_scan(*args, **kwargs)
        walked.append(True)
        return result

    monkeypatch.setattr(pipeline, "scan_folder", scan_folder)
    during: list[bool] = []

    class Watching:
        def __getattr__(self, name):
            return getattr(rig.client, name)

        def add(self, *args, **kwargs):
            during.append(not walked)
            return rig.client.add(*args, **kwargs)

    planned = []
    run = reconcile_mirror(rig.mirror, rig.store, Watching(), spool_dir=rig.state / "spool", on_planned=planned.append)
    assert sorted(run.report.added) == sorted(f"d{i % 3}/{i}.jpg" for i in range(n)) and run.report.ok
    assert len(during) == n and sum(during) >= 2  # adds made while the walk was running
    assert planned[0].adds == ()  # the plan made after the walk found nothing left to add
    assert len(rig.remote()) == n
    run, calls = rig.run()
    assert calls == 0 and run.plan.is_empty


def test_an_early_add_refused_is_kept_rejected_and_not_tried_again(rig, tmp_path):
    """The gallery takes the image for an entry another mirror owns: the early add is refused, the file
    is reported rejected once, the manifest keeps the verdict, and the next run makes no call."""
    rig.put("a.jpg", 1)
    other_folder = tmp_path / "other"
    other_folder.mkdir()
    (other_folder / "same.jpg").write_bytes((rig.folder / "a.jpg").read_bytes())
    t = os.stat(other_folder / "same.jpg").st_mtime_ns - 10**10
    os.utime(other_folder / "same.jpg", ns=(t, t))
    run, _ = rig.run()
    assert run.report.added == ["a.jpg"]
    other = MirrorConfig(name="other", folder=other_folder, library="same_hq")
    spool = rig.state / "spool"
    run = reconcile_mirror(other, rig.store, rig.client, spool_dir=spool)
    assert [p for p, _ in run.report.rejected] == ["same.jpg"] and run.report.added == []
    assert "mirror 'm'" in run.report.rejected[0][1]
    assert run.report.unchanged_problems == set() and not run.report.ok  # a new rejection: exit 1, not 0
    assert rig.store.known_files("other")["same.jpg"].verdict == "rejected"
    before = rig.client.stats.requests
    again = reconcile_mirror(other, rig.store, rig.client, spool_dir=spool)
    assert rig.client.stats.requests == before and [p for p, _ in again.report.rejected] == ["same.jpg"]


def test_a_stopping_run_does_not_wait_out_the_retries_of_its_calls_in_flight(rig):
    """Shutting down while the gallery fails: the calls in flight end at their next backoff instead of
    retrying for up to ~30 s each (a daemon must exit within its stop deadline); the run is interrupted,
    not stopped by the gallery, and what was sent is journaled for the next run to finish."""
    import random
    import socket

    from imgsync.clock import FakeClock
    from imgsync.gallery.retry import GIVE_UP_POLL, RetryPolicy

    for i in range(6):
        rig.put(f"{i}.jpg", i)
    with socket.socket() as s:  # a port nobody listens on: every call fails at once, as "unavailable"
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    clock = FakeClock()
    client = GalleryClient(
        down,
        rig.server.api_key,
        rig.server.secret_key,
        in_flight=3,
        retry=RetryPolicy(attempts=5, base=30.0, cap=30.0),
        clock=clock,
        rng=random.Random(1),
    )
    with client:
        run = reconcile_mirror(
            rig.mirror,
            rig.store,
            client,
            spool_dir=rig.state / "spool",
            should_stop=lambda: bool(clock.sleeps),  # shutting down once the first backoff began
        )
    assert run.report.interrupted and run.report.stopped is None
    # A try that failed before any backoff began may have been retried once; no more, no long sleeps.
    assert client.stats.retries <= 3 and all(s <= GIVE_UP_POLL for s in clock.sleeps)
    assert rig.store.last_run("m").status == "interrupted"
    run, _ = rig.run()  # the gallery is back: the intents left open are finished, the rest is added
    assert run.report.ok and rig.store.open_journal() == [] and len(rig.remote()) == 6


def test_only_rejections_unchanged_since_the_last_run_stop_counting_for_the_exit_code():
    """A file rejected as before (not a valid image) no longer makes the exit code 1; a file that could not
    be read may be a valid image the library lacks: it counts in every run (README, exit code 1)."""
    from imgsync.folder import check_folder
    from imgsync.model import KnownFile, ScannedFile
    from imgsync.pipeline import Planned
    from imgsync.plan import Plan
    from imgsync.scan import ScanResult

    def scanned(path: str, verdict: str, reason: str) -> ScannedFile:
        return ScannedFile(path, 10, 1_600_000_000 * 10**9, 7, "h" if verdict == "rejected" else None, verdict, reason)

    files = {
        "bad.jpg": scanned("bad.jpg", "rejected", "not an image"),
        "locked.jpg": scanned("locked.jpg", "error", "cannot read: permission denied"),
    }
    known = {
        p: KnownFile(f.path, f.size, f.mtime_ns, f.inode, f.content_hash, f.verdict, f.reason, None)
        for p, f in files.items()
    }
    planned = Planned(Plan(), ScanResult(files), check_folder(Path("/")), known)
    assert planned.unchanged_problems == {"bad.jpg"}
