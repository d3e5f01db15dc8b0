"""reconcile: snapshot → scan → plan → execute, per mirror. The composition root that `imgsync reconcile`
and (later) `imgsync watch` both call, so there is one code path for the work.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from imgsync.config import MirrorConfig
from imgsync.errors import ConfigError, GalleryChangedError, GalleryError
from imgsync.execute import Executor, Gallery, Report, UploadChangedError, sweep_spool
from imgsync.manifest import MirrorState, Store
from imgsync.model import KnownFile, ScannedFile
from imgsync.plan import Plan, make_plan
from imgsync.scan import SETTLE_NS, ScanResult, digest_of, is_trusted, scan_folder, stat_digest
from imgsync.shrink import ShrinkError, prepare_upload

log = logging.getLogger("imgsync.pipeline")


@dataclass(frozen=True, slots=True)
class FolderCheck:
    fatal: str | None = None  # the mirror cannot run at all (nothing is changed)
    suspect: str | None = None  # deletes withheld unless --force
    device: int = 0


def check_folder(mirror: MirrorConfig, last_device: int | None) -> FolderCheck:
    """Is the mirror's folder there, a directory, and on the device it was on last time?"""
    folder = mirror.folder
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return FolderCheck(fatal=f"folder {folder} does not exist (unmounted disk or renamed?); nothing changed")
    except OSError as e:
        return FolderCheck(fatal=f"folder {folder} cannot be read ({e.strerror}); nothing changed")
    if not os.path.isdir(folder):
        return FolderCheck(fatal=f"{folder} is not a directory; nothing changed")
    suspect = None
    if last_device is not None and last_device != st.st_dev:
        suspect = (f"folder {folder} is on another device than last time "
                   f"(device {last_device} → {st.st_dev}: a different disk mounted there?)")
    return FolderCheck(suspect=suspect, device=st.st_dev)


def make_reader(mirror: MirrorConfig) -> Callable[[Path, str, str], bytes]:
    """The executor's way to read an upload: the bytes must still hash to what the scan saw."""

    def read(folder: Path, path: str, content_hash: str) -> bytes:
        full = folder / path
        try:
            data = full.read_bytes()
        except FileNotFoundError:
            raise UploadChangedError("vanished before upload; will retry") from None
        except OSError as e:
            raise UploadChangedError(f"cannot be read ({e.strerror}); will retry") from None
        if hashlib.sha256(data).hexdigest() != content_hash:
            raise UploadChangedError("changed since the scan; will upload it once it is stable")
        try:
            return prepare_upload(data, mirror.library, mirror.fit)
        except ShrinkError as e:
            raise UploadChangedError(f"cannot be made to fit: {e}") from None

    return read


@dataclass
class MirrorRun:
    mirror: MirrorConfig
    plan: Plan | None
    report: Report
    fatal: str | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    plan: Plan
    scan: ScanResult
    check: FolderCheck
    known: Mapping[str, KnownFile]


def judged_as(mirror: MirrorConfig) -> str:
    """The settings a file's verdict depends on; when they change, every file is judged again."""
    return f"{mirror.library}:{mirror.fit}"


def plan_mirror(mirror: MirrorConfig, store: Store | None, *, force: bool, report: Report,
                now_ns: int | None = None, scope: Collection[str] | None = None,
                min_age_ns: int = SETTLE_NS) -> Planned | str:
    """Scan and plan one mirror, reading only. Returns the plan, or why the mirror cannot run.
    scope / min_age_ns: see scan.scan_folder (a scoped scan re-examines only those paths)."""
    state = store.mirror_state(mirror.name) if store is not None else None
    check = check_folder(mirror, state.device if state else None)
    if check.fatal:
        return check.fatal
    known = store.known_files(mirror.name) if store is not None else {}
    entries = store.entries(mirror.name) if store is not None else {}
    reusable = known
    if state is not None and state.judged_as != judged_as(mirror):
        # Verdicts were given under another library or fit: don't reuse them (hashes are re-read too).
        reusable = {p: replace(k, hashed_at_ns=0) for p, k in known.items()}
    if reusable is not known:
        scope = None  # every verdict must be given again
    scan = scan_folder(mirror.folder, mirror, reusable, now_ns=now_ns or time.time_ns(), scope=scope,
                       min_age_ns=min_age_ns)
    report.pending += [(path, f"directory not readable: {reason}") for path, reason in scan.errors]
    plan = make_plan(mirror, scan.files, known, entries, scan_complete=scan.complete,
                     suspect_folder=check.suspect, force=force)
    return Planned(plan, scan, check, known)


def reconcile_mirror(
    mirror: MirrorConfig,
    store: Store,
    gallery: Gallery,
    *,
    spool_dir: Path,
    force: bool = False,
    on_planned: Callable[[Plan], None] = lambda plan: None,
    on_progress: Callable[[int], None] = lambda n: None,
    should_stop: Callable[[], bool] = lambda: False,
    scope: Collection[str] | None = None,
    min_age_ns: int = SETTLE_NS,
) -> MirrorRun:
    """Recover, scan, plan and execute one mirror. A gallery error that stops the run is report.stopped.

    scope: re-examine only these relative paths (files or directories) and take every other path
    from the manifest as unchanged — the watch daemon's cheap run after events; None = full scan.
    """
    executor = Executor(mirror, store, gallery, spool_dir=spool_dir, read_upload=make_reader(mirror),
                        on_progress=on_progress, should_stop=should_stop)
    report = Report(mirror.name)
    run_id = store.start_run(mirror.name)
    try:
        executor.recover(store.open_journal(), report)
    except GalleryError as e:  # the gallery is unreachable, out of quota or refusing us: try next run
        report.stopped = e
        store.finish_run(run_id, "stopped", report.counts(), str(e))
        return MirrorRun(mirror, None, report)
    state = store.mirror_state(mirror.name)
    if scope is None and not report.recovered and _still_settled(mirror, store, state):
        # Nothing on disk changed since a clean run left everything in step: the plan is empty.
        report.rejected += store.rejected_files(mirror.name)
        store.finish_run(run_id, "ok" if report.ok else "partial", report.counts())
        return MirrorRun(mirror, Plan(), report)
    if state is not None and state.settled:
        store.unsettle(mirror.name)  # from here on, only a clean end of a full run may claim it again
    planned = plan_mirror(mirror, store, force=force, report=report, scope=scope, min_age_ns=min_age_ns)
    if isinstance(planned, str):
        store.finish_run(run_id, "skipped", report.counts(), planned)
        return MirrorRun(mirror, None, report, fatal=planned)
    scan = planned.scan
    # Paths under a directory that could not be listed are kept: they are not known to be gone.
    gone = [p for p in planned.known if p not in scan.files] if scan.complete else []
    # Write only what differs from the manifest: a no-op run over 100k files writes nothing.
    looked_at = scan.files.values() if scan.examined is None else (scan.files[p] for p in scan.examined)
    store.save_scan(mirror.name, changed_files(looked_at, planned.known), gone=gone)
    on_planned(planned.plan)
    executor.run(planned.plan, report)
    if report.stopped is None and scan.complete and scan.scope is None:
        store.set_mirror_state(mirror.name, str(mirror.folder), planned.check.device, len(scan.files),
                               judged_as(mirror), settled=_settled_value(mirror, scan, planned.plan, report))
    status = ("stopped" if report.stopped else "interrupted" if report.interrupted
              else "ok" if report.ok else "partial")
    store.finish_run(run_id, status, report.counts(), str(report.stopped) if report.stopped else None)
    return MirrorRun(mirror, planned.plan, report)


# --- the no-op fast path ----------------------------------------------------------------------------
#
# A full reconcile of a big folder that changed nothing should cost about one stat walk. After a full
# run that ended clean (every file stable and judged, nothing failed, pending or withheld, nothing in
# the journal) the mirror records "<fingerprint>:<digest>": the fingerprint of every setting the plan
# depends on, and scan.digest_of the files. The next full run walks the folder computing the same
# digest (scan.stat_digest: no file opened, no record built); if both match, the scan would reuse every
# hash and verdict and the plan would be empty, so neither is computed. Any other run clears the mark
# first (Store.unsettle), so a run that dies or fails midway can never leave a stale claim behind.

#: Bump when plan rules change, so marks left by an older imgsync are not trusted.
PLAN_RULES_VERSION = 1


def settled_fingerprint(mirror: MirrorConfig) -> str:
    return hashlib.sha256(f"{PLAN_RULES_VERSION}|{mirror!r}".encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _still_settled(mirror: MirrorConfig, store: Store, state: MirrorState | None) -> bool:
    fingerprint = settled_fingerprint(mirror)
    if state is None or not state.settled or not state.settled.startswith(fingerprint + ":"):
        return False
    check = check_folder(mirror, state.device)
    if check.fatal or check.suspect or any(i.mirror == mirror.name for i in store.open_journal()):
        return False
    digest = stat_digest(mirror.folder, mirror)
    return digest is not None and state.settled == f"{fingerprint}:{digest}"


def _settled_value(mirror: MirrorConfig, scan: ScanResult, plan: Plan, report: Report) -> str | None:
    """The mark for a run that left everything in step, else None."""
    if (report.failed or report.pending or report.stopped or report.interrupted or report.withheld_reason
            or plan.withheld):
        return None
    if not all(is_trusted(f) for f in scan.files.values()):
        return None  # the next scan would look at some file again, so the walk alone cannot vouch for it
    return f"{settled_fingerprint(mirror)}:{digest_of(scan.files.values())}"


def changed_files(files: Iterable[ScannedFile], known: Mapping[str, KnownFile]) -> list[ScannedFile]:
    """The scanned files whose record would change (new, or any field the scan sets differs)."""
    out = []
    for f in files:
        k = known.get(f.path)
        if (k is None or k.size != f.size or k.mtime_ns != f.mtime_ns or k.inode != f.inode
                or k.content_hash != f.content_hash or k.verdict != f.verdict or k.reason != f.reason
                or k.hashed_at_ns != f.hashed_at_ns):
            out.append(f)
    return out


def sweep_unreferenced_spool(store: Store, spool_dir: Path) -> None:
    referenced = {i.payload.get("spool") for i in store.open_journal() if i.op == "add"}
    sweep_spool(spool_dir, {r for r in referenced if r})


def bind_gallery(store: Store, identity: str, *, rebind: bool = False) -> int:
    """Check that the manifest's entries live in the gallery the config points at (`identity`, from
    gallery.embedded.gallery_identity). A first use binds the state dir to it. Pointing the config at
    another gallery (the cloud after trying the embedded one, another account, a deleted embedded
    gallery) would otherwise make every image look uploaded already: refuse, unless `rebind`, which
    forgets the old gallery's entries so that every image is added to the new one. Returns how many
    entries were forgotten."""
    bound = store.setting("gallery")
    if bound == identity:
        return 0
    entries = store.entry_count()
    if bound is None or entries == 0:
        store.set_setting("gallery", identity)  # first use, or a manifest from before this check
        return 0
    if not rebind:
        raise GalleryChangedError(
            f"this state dir's manifest records {entries} entries in gallery {_shown(bound)}, but the "
            f"config now points at gallery {_shown(identity)}: those images would look uploaded already. Run "
            "`imgsync reconcile --rebind` to forget them and add every image to the new gallery (they stay in "
            "the old one), or point [gallery] back at the old gallery")
    n = store.forget_gallery(identity)
    log.warning("gallery changed from %s to %s: forgot %d entries of the old gallery; every image will be added "
                "to the new one", _shown(bound), _shown(identity), n)
    return n


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
