"""reconcile: recover → scan → plan → execute, per mirror: the one code path of `imgsync reconcile`, `imgsync
watch` and the API. A full scan already starts the adds it is sure of while it walks (execute.EarlyAdds), so
the calls overlap the reading; the plan made after the walk does the rest.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from imgsync.clock import SYSTEM_CLOCK, Clock
from imgsync.config import MirrorConfig
from imgsync.errors import ConfigError, GalleryChangedError, GalleryError
from imgsync.execute import EarlyAdds, Executor, ScanAborted, UploadChangedError, sweep_spool
from imgsync.folder import FolderCheck, check_folder
from imgsync.gallery import Gallery
from imgsync.manifest import Store
from imgsync.model import KnownFile, ScannedFile
from imgsync.plan import Plan, make_plan
from imgsync.report import MirrorRun, Report
from imgsync.scan import SETTLE_NS, ScanResult, digest_of, is_trusted, scan_folder
from imgsync.settled import settled_mark, still_settled
from imgsync.shrink import ShrinkError, prepare_upload

log = logging.getLogger("imgsync.pipeline")


def make_reader(mirror: MirrorConfig) -> Callable[[Path, str, str], bytes]:
    """The executor's way to read an upload: the bytes must still hash to what the scan saw."""

    def read(folder: Path, path: str, content_hash: str) -> bytes:
        full = folder / path
        try:
            data = full.read_bytes()
        except FileNotFoundError:
            raise UploadChangedError("vanished before upload; will retry", still_changing=True) from None
        except OSError as e:
            raise UploadChangedError(f"cannot be read ({e.strerror}); will retry") from None
        if hashlib.sha256(data).hexdigest() != content_hash:
            raise UploadChangedError("changed since the scan; will upload it once it is stable", still_changing=True)
        try:
            return prepare_upload(data, mirror.lib, mirror.fit)
        except ShrinkError as e:
            raise UploadChangedError(f"cannot be made to fit: {e}") from None

    return read


@dataclass(frozen=True, slots=True)
class Planned:
    plan: Plan
    scan: ScanResult
    check: FolderCheck
    known: Mapping[str, KnownFile]
    #: the manifest's files before this run's early adds wrote to it (None: `known`)
    before: Mapping[str, KnownFile] | None = None

    @property
    def unchanged_problems(self) -> set[str]:
        """Files rejected with the same reason, and unchanged, since the manifest's record before this run
        (an early add refused in this run is a new rejection). Only rejections: they are not valid images,
        so a library without them still holds exactly the folder's valid images (exit 0), while a file
        that could not be read may be one it lacks, and counts (exit 1) in every run until it is read."""
        before = self.known if self.before is None else self.before
        out = set()
        for path, f in self.scan.files.items():
            k = before.get(path)
            if (
                f.verdict == "rejected"
                and k is not None
                and k.verdict == f.verdict
                and k.reason == f.reason
                and k.content_hash == f.content_hash
                and (k.size, k.mtime_ns, k.inode) == (f.size, f.mtime_ns, f.inode)
            ):
                out.add(path)
        return out


def judged_as(mirror: MirrorConfig) -> str:
    """The settings a file's verdict depends on; when they change, every file is judged again."""
    return f"{mirror.library}:{mirror.fit}"


@dataclass(frozen=True)
class SettleWait:
    """A one-shot run finishes what it can see: files that are only too young to trust (saved a moment
    ago, or changed while being read) are looked at again until they are settled, for at most `limit_s`
    in all, and synced in the same run. What still changes after that stays pending. (The watch daemon
    has its own debounce and does not wait here.)"""

    clock: Clock = SYSTEM_CLOCK
    limit_s: float = 10.0
    #: told once, before the first wait: (how many files, the limit in seconds)
    on_wait: Callable[[int, float], None] = lambda n, limit_s: None


def plan_mirror(
    mirror: MirrorConfig,
    store: Store | None,
    *,
    force: bool,
    report: Report,
    now_ns: int | None = None,
    scope: Collection[str] | None = None,
    min_age_ns: int = SETTLE_NS,
    settle: SettleWait | None = None,
    early: EarlyAdds | None = None,
) -> Planned:
    """Scan and plan one mirror, reading only (but for `early` adds). A folder that cannot be listed
    (missing, not a directory, unreadable) scans as empty and its problem goes to report.folder_problem:
    the plan withholds every delete (see plan.py). scope / min_age_ns: see scan.scan_folder (a scoped scan
    re-examines only those paths); settle: wait for young files (see SettleWait); early: adds started
    while the walk runs (execute.EarlyAdds; it raises ScanAborted into the walk if the calls stop)."""
    state = store.mirror_state(mirror.name) if store is not None else None
    check = check_folder(mirror.folder, *((state.device, state.fsid) if state else (None, None)))
    known = store.known_files(mirror.name) if store is not None else {}
    entries = store.entries(mirror.name) if store is not None else {}
    if early is not None:
        early.held(entries.values())
    if not check.usable:
        if force and check.problem in ("missing", "not_dir"):
            report.folder_removed = mirror.folder  # "it really is gone": the plan deletes what came from it
        else:
            report.folder_problem = check.message
        # Missing or not a directory: there is nothing to scan (and --force may delete what came from it);
        # unreadable: files may still be there, so the scan counts as incomplete.
        scan = ScanResult({}, complete=check.problem != "unreadable")
        plan = make_plan(
            mirror, {}, known, entries, scan_complete=scan.complete, folder_problem=check.message, force=force
        )
        return Planned(plan, scan, check, known)
    reusable = known
    if state is not None and state.judged_as != judged_as(mirror):
        # Verdicts were given under another library or fit: don't reuse them (hashes are re-read too).
        reusable = {p: replace(k, hashed_at_ns=0) for p, k in known.items()}
    if reusable is not known:
        scope = None  # every verdict must be given again
    scan = scan_folder(
        mirror.folder,
        mirror,
        reusable,
        now_ns=now_ns or time.time_ns(),
        scope=scope,
        min_age_ns=min_age_ns,
        on_examined=early,
    )
    if settle is not None:
        scan = wait_until_settled(mirror, scan, settle, min_age_ns)
    if early is not None and early.finish():
        assert store is not None
        # The early adds' files and entries are in the manifest now; what they could not add, the plan
        # takes as the add found it (refused: rejected; changed meanwhile: pending), not as a new add.
        for path, (verdict, reason) in early.verdicts().items():
            if path in scan.files:
                scan.files[path] = replace(scan.files[path], verdict=verdict, reason=reason)
        before, known, entries = known, store.known_files(mirror.name), store.entries(mirror.name)
    else:
        before = None
    report.pending += [(path, f"directory not readable: {reason}") for path, reason in scan.errors]
    _tell_notes(mirror, scan.notes)
    plan = make_plan(
        mirror,
        scan.files,
        known,
        entries,
        scan_complete=scan.complete,
        moved_folder=check.message if check.moved else None,
        force=force,
    )
    return Planned(plan, scan, check, known, before)


#: (mirror, path, note) already told this process: a daemon's hourly scans do not repeat them.
_TOLD: set[tuple[str, str, str]] = set()


def _tell_notes(mirror: MirrorConfig, notes: Iterable[tuple[str, str]]) -> None:
    """Names the include patterns match that are no image files (a FIFO or a directory called x.jpg), and
    what judging a file noted (Pillow's "Corrupt EXIF data", a shrink): each said once, at -v, as that
    file's own line, so a user wondering about x.jpg can find out (and nothing prints over a progress bar)."""
    for path, note in notes:
        key = (mirror.name, path, note)
        if key not in _TOLD:
            _TOLD.add(key)
            log.info("%s: %s: %s", mirror.name, path, note)


def wait_until_settled(mirror: MirrorConfig, scan: ScanResult, settle: SettleWait, min_age_ns: int) -> ScanResult:
    """Look again at the scan's unstable files (too young, or changed while being read) until each is
    settled or `settle.limit_s` has passed; each look re-reads only those files."""
    clock = settle.clock
    deadline = clock.monotonic() + settle.limit_s
    files = scan.files
    errors = list(scan.errors)
    told = False
    while True:
        young = [f for f in files.values() if f.verdict == "unstable"]
        left = deadline - clock.monotonic()
        if not young or left <= 0:
            break
        # The youngest file is old enough at its mtime + min_age; one that keeps changing moves that on.
        wait = (max(f.mtime_ns for f in young) + min_age_ns) / 1e9 - clock.time() + SETTLE_MARGIN_S
        if wait > left:
            break  # cannot settle within the bound (still being written, or an mtime in the future)
        if not told:
            settle.on_wait(len(young), settle.limit_s)
            told = True
        clock.sleep(min(max(wait, SETTLE_MARGIN_S), left))
        again = scan_folder(
            mirror.folder,
            mirror,
            {},
            now_ns=int(clock.time() * 1e9),
            scope=[f.path for f in young],
            min_age_ns=min_age_ns,
        )
        files = {p: f for p, f in files.items() if f.verdict != "unstable"} | again.files
        errors += again.errors
    if files is scan.files:
        return scan
    return replace(scan, files=files, errors=errors, complete=scan.complete and not errors)


#: Looked at again this long after a young file should have settled (timestamps are not exact).
SETTLE_MARGIN_S = 0.1


def reconcile_mirror(
    mirror: MirrorConfig,
    store: Store,
    gallery: Gallery,
    *,
    spool_dir: Path,
    force: bool = False,
    on_planned: Callable[[Plan], None] = lambda plan: None,
    on_progress: Callable[[int], None] = lambda n: None,
    on_early: Callable[[int], None] = lambda n: None,
    should_stop: Callable[[], bool] = lambda: False,
    scope: Collection[str] | None = None,
    min_age_ns: int = SETTLE_NS,
    settle: SettleWait | None = SettleWait(),
) -> MirrorRun:
    """Recover, scan, plan and execute one mirror. A gallery error that stops the run is report.stopped.

    scope: re-examine only these relative paths (files or directories) and take every other path
    from the manifest as unchanged — the watch daemon's cheap run after events; None = full scan.
    settle: a one-shot run waits (bounded) for files still being written and syncs them too; the daemon,
    which debounces, passes None.
    on_early(n): a full scan starts adds while it walks (execute.EarlyAdds); n adds started so far, each
    reported to on_progress when it ends, before on_planned gives the rest of the plan.
    should_stop(): checked between actions; once true, calls in flight are not retried either
    (GalleryClient.retries_end_when) and the run ends as interrupted.
    """
    end_retries = getattr(gallery, "retries_end_when", None)  # a test's fault-injecting wrapper may lack it
    with end_retries(should_stop) if end_retries is not None else nullcontext():
        executor = Executor(
            mirror,
            store,
            gallery,
            spool_dir=spool_dir,
            read_upload=make_reader(mirror),
            on_progress=on_progress,
            should_stop=should_stop,
        )
        report = Report(mirror.name)
        run_id = store.start_run(mirror.name)
        try:
            executor.recover(store.open_journal(), report)
        except GalleryError as e:  # the gallery is unreachable, out of quota or refusing us: try next run
            report.stopped = e
            store.finish_run(run_id, "stopped", report.counts(), str(e))
            return MirrorRun(mirror, None, report)
        state = store.mirror_state(mirror.name)
        if (
            scope is None
            and not report.recovered
            and state is not None
            and still_settled(mirror, state, open_intents=sum(i.mirror == mirror.name for i in store.open_journal()))
        ):
            # Nothing on disk changed since a clean run left everything in step: the plan is empty.
            report.rejected += store.rejected_files(mirror.name)
            report.unchanged_problems = {p for p, _ in report.rejected}
            store.finish_run(run_id, "ok" if report.ok else "partial", report.counts())
            return MirrorRun(mirror, Plan(), report)
        if state is not None and state.settled:
            store.unsettle(mirror.name)  # from here on, only a clean end of a full run may claim it again
        with EarlyAdds(executor, report, on_early) if scope is None else nullcontext() as early:
            try:
                planned = plan_mirror(
                    mirror,
                    store,
                    force=force,
                    report=report,
                    scope=scope,
                    min_age_ns=min_age_ns,
                    settle=settle,
                    early=early,
                )
            except ScanAborted:  # the early adds' calls stopped: quota, auth, gallery down, or shutting down
                assert early is not None
                early.finish()
                status = "stopped" if report.stopped else "interrupted"
                store.finish_run(run_id, status, report.counts(), str(report.stopped) if report.stopped else None)
                return MirrorRun(mirror, None, report)
        if scope is not None and (planned.plan.deletes or planned.plan.withheld):
            # A scoped scan takes the rest of the folder from the manifest, so a guard cannot tell a few
            # deleted files from a folder emptied or unmounted under the watcher: deletes are decided on a
            # full scan, every time.
            report.pending.clear()
            planned = plan_mirror(mirror, store, force=force, report=report, min_age_ns=min_age_ns, settle=settle)
        scan, plan = planned.scan, planned.plan
        report.unchanged_problems = planned.unchanged_problems
        # A run whose deletes were withheld confirms no disappearance: files not found stay in the manifest
        # (with their entries) until a run that may delete, so nothing a guard protects is forgotten.
        trusted_absence = scan.complete and not plan.withheld and (planned.check.usable or bool(report.folder_removed))
        gone = [p for p in planned.known if p not in scan.files] if trusted_absence else []
        # Write only what differs from the manifest: a no-op run over 100k files writes nothing.
        looked_at = scan.files.values() if scan.examined is None else (scan.files[p] for p in scan.examined)
        store.save_scan(mirror.name, changed_files(looked_at, planned.known), gone=gone)
        on_planned(plan)
        executor.run(plan, report)
        if report.stopped is None and trusted_absence and scan.scope is None and planned.check.usable:
            store.set_mirror_state(
                mirror.name,
                str(mirror.folder),
                planned.check.device or 0,
                len(scan.files),
                judged_as(mirror),
                settled=_settled_value(mirror, scan, plan, report),
                fsid=planned.check.fsid,
            )
        # Otherwise the last good device and file count stay what they were: a guard that withheld deletes
        # fires again next run (and the one after) until its condition clears or --force confirms it.
        status = (
            "stopped" if report.stopped else "interrupted" if report.interrupted else "ok" if report.ok else "partial"
        )
        store.finish_run(
            run_id,
            status,
            report.counts(),
            str(report.stopped) if report.stopped else report.folder_problem or report.withheld_reason,
        )
        return MirrorRun(mirror, plan, report)


def _settled_value(mirror: MirrorConfig, scan: ScanResult, plan: Plan, report: Report) -> str | None:
    """The mark for a run that left everything in step, else None."""
    if (
        report.failed
        or report.pending
        or report.stopped
        or report.interrupted
        or report.withheld_reason
        or plan.withheld
    ):
        return None
    if not all(is_trusted(f) for f in scan.files.values()):
        return None  # the next scan would look at some file again, so the walk alone cannot vouch for it
    return settled_mark(mirror, digest_of(scan.files.values()))


def changed_files(files: Iterable[ScannedFile], known: Mapping[str, KnownFile]) -> list[ScannedFile]:
    """The scanned files whose record would change (new, or any field the scan sets differs)."""
    out = []
    for f in files:
        k = known.get(f.path)
        if (
            k is None
            or k.size != f.size
            or k.mtime_ns != f.mtime_ns
            or k.inode != f.inode
            or k.content_hash != f.content_hash
            or k.verdict != f.verdict
            or k.reason != f.reason
            or k.hashed_at_ns != f.hashed_at_ns
        ):
            out.append(f)
    return out


def sweep_unreferenced_spool(store: Store, spool_dir: Path) -> None:
    referenced = {i.payload.get("spool") for i in store.open_journal() if i.op == "add"}
    sweep_spool(spool_dir, {r for r in referenced if r})


def gallery_change(store: Store, identity: str) -> tuple[str, int] | None:
    """(the gallery bound, how many acknowledged entries live there) when the config points at another
    gallery (`identity`) than the one the manifest's acknowledged entries live in; else None. Reads only."""
    bound = store.setting("gallery")
    if bound is None or bound == identity:
        return None  # (bound None with acknowledged entries: a manifest from before the binding was recorded)
    acknowledged = store.entry_count(acknowledged=True)
    return (bound, acknowledged) if acknowledged else None


def bind_gallery(
    store: Store, identity: str, *, rebind: bool = False, confirm: Callable[[], None] | None = None
) -> int:
    """Check that the manifest's entries live in the gallery the config points at (`identity`, from
    gallery.identity.gallery_identity). Pointing the config at another gallery (the cloud after trying
    the embedded one, another account, a deleted embedded gallery) would otherwise make every image look
    uploaded already: refuse, unless `rebind`, which forgets the old gallery's entries so that every
    image is added to the new one. Returns how many entries were forgotten.

    confirm(): have the new gallery answer first (GalleryClient.authenticate). A mistyped key or port
    then ends with the gallery's own error (refused credentials, exit 4; unreachable, exit 3), not with
    advice to --rebind, and --rebind forgets nothing for a gallery that never answered.

    A manifest is bound to a gallery by the first answer it gets from it (Store.expect_gallery): entries
    that no gallery ever acknowledged (a wrong port, refused credentials) bind it to nothing."""
    change = gallery_change(store, identity)
    if change is None:
        bound = store.setting("gallery")
        if bound == identity:
            return 0
        if bound is None and store.entry_count(acknowledged=True):
            store.set_setting("gallery", identity)  # a manifest from before the binding was recorded
            return 0
        if bound is not None:
            store.unbind_gallery()  # nothing of ours lives there (never reached, or all deleted)
        store.expect_gallery(identity)
        return 0
    bound, acknowledged = change
    if confirm is not None:
        confirm()
    if not rebind:
        raise GalleryChangedError(changed_text(bound, acknowledged, identity))
    n = store.forget_gallery(identity)
    log.warning(
        "gallery changed from %s to %s: forgot %d entries of the old gallery; every image will be added to the new one",
        _shown(bound),
        _shown(identity),
        n,
    )
    return n


def changed_text(bound: str, acknowledged: int, identity: str) -> str:
    """Why a run refuses a config that points at another gallery than the entries' (gallery_change)."""
    return (
        f"this state dir's manifest records {acknowledged} entries in gallery {_shown(bound)}, but the "
        f"config now points at gallery {_shown(identity)}: those images would look uploaded already. Run "
        "`imgsync reconcile --rebind` to forget them and add every image to the new gallery (they stay in "
        "the old one), or point [gallery] back at the old gallery"
    )


def _shown(identity: str) -> str:
    where, _, key = identity.rpartition("#")
    return f"{'the embedded local gallery' if where == 'local' else where} (key {key})"


def select_mirrors(all_mirrors: Sequence[MirrorConfig], names: Sequence[str]) -> list[MirrorConfig]:
    if not names:
        return list(all_mirrors)
    by_name = {m.name: m for m in all_mirrors}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(f"no mirror named {missing[0]!r} (known: {', '.join(by_name) or 'none configured'})")
    return [by_name[n] for n in names]
