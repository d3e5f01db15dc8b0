"""Carry out a Plan against the gallery, journaling every remote call before it is made.

The one place that sequences side effects. Each action is: write the intent (manifest transaction),
make the call, record the outcome (manifest transaction). A kill -9 at any point leaves either no
intent (nothing was sent) or an open intent that `recover()` finishes on the next run:

  open add      its image bytes were spooled before the intent was written: add again; a duplicate
                answer (216681) adopts the cont_sign it carries, or search-and-match finds it by brief
  open delete   delete again; an entry that is already gone counts as done
  open update   dropped: the plan compares briefs and labels again and re-issues it if still needed

Several actions are under way at once (flight.py): each is a generator that journals, yields its call to
a worker thread, and records the answer, all manifest work staying on the caller's thread. The guarantees
are per action, so they hold with any number in flight; after a crash the journal may simply hold several
open intents, each recovered as above.

So the gallery never gets a duplicate entry (the cloud refuses identical images, and we adopt),
never keeps an orphan (every intent is finished or undone), and the manifest never loses a record.
One image's refusal is recorded on its file and the run goes on; transient, quota and auth failures
stop the run (they would fail every call) and leave their intent for the next run.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from imgsync.brief import render_brief
from imgsync.config import MirrorConfig
from imgsync.errors import (
    DISK_FULL_ERRNOS,
    GalleryDuplicateError,
    GalleryError,
    GalleryNotFoundError,
    GalleryRequestError,
    ManifestError,
    disk_full,
)
from imgsync.flight import Flight, Step, drive
from imgsync.gallery import Gallery
from imgsync.libraries import get_library
from imgsync.manifest import ContSignTakenError
from imgsync.model import Entry, ScannedFile, Verdict
from imgsync.plan import Add, Delete, Plan, Readd, Remap, Update, early_add
from imgsync.report import Report

log = logging.getLogger("imgsync.execute")


class UploadChangedError(Exception):
    """The file is no longer what the scan saw (changed, vanished, unreadable): retry on a later run.
    still_changing: it changed or vanished since the scan (a write in progress: pending, not a failure)."""

    def __init__(self, message: str, *, still_changing: bool = False) -> None:
        super().__init__(message)
        self.still_changing = still_changing


class _Interrupted(Exception):
    """should_stop() said so between two actions."""


#: What ends a run's calls in an orderly way: the gallery's stop errors, and a shutdown asked for.
_STOPS = (GalleryError, _Interrupted)


class StillDeletingError(Exception):
    """The gallery calls the image a duplicate of an entry we deleted lately: its delete has not taken
    effect yet (the cloud documents a delay of up to ~4 h for picturebook). Adopting that entry would
    record one that is about to vanish, so the add is retried on a later run instead."""


#: How long after our delete of an entry a duplicate answer naming it means "not deleted yet".
DELETE_SETTLE_S = 24 * 3600


#: Reads the bytes to upload for (folder, relative path, expected content hash); raises UploadChangedError.
ReadUpload = Callable[[Path, str, str], bytes]


class Executor:
    def __init__(
        self,
        mirror: MirrorConfig,
        store: Any,
        gallery: Gallery,
        *,
        spool_dir: Path,
        read_upload: ReadUpload,
        on_progress: Callable[[int], None] = lambda n: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.mirror = mirror
        self.library = get_library(mirror.library)
        self.store = store
        self.gallery = gallery
        self.spool_dir = spool_dir
        self.read_upload = read_upload
        self._on_progress = on_progress
        self.should_stop = should_stop

    # ------------------------------------------------------------------ the plan

    def run(self, plan: Plan, report: Report) -> Report:
        """Apply `plan`; a GalleryError that stops the run is stored in report.stopped (manifest stays valid).

        Each phase keeps several calls in flight (flight.py); a phase starts when the one before has
        ended, which keeps the order that matters: a changed file's new image is in before its old
        entry goes (adds before deletes), and a relabel's delete before its add (inside its step).
        A run that early adds already stopped (report.stopped / interrupted) makes no call here."""
        report.rejected += [(r.path, r.reason) for r in plan.rejects]
        report.pending += list(plan.pending)
        report.withheld, report.withheld_reason = len(plan.withheld), plan.withheld_reason
        for remap in plan.remaps:
            self._remap(remap, report)
        phases: list[Iterable[Step]] = [
            (self._update(update, report) for update in plan.updates),
            (self._readd(readd, report) for readd in plan.readds),
            (self._add(add, report) for add in plan.adds),
            self._deletes(plan.deletes, report),
        ]
        for steps in phases:
            if report.stopped is not None or report.interrupted:
                break
            _record_stop(self._drive(steps), report, self.should_stop)
        _tidy(report)
        return report

    def _drive(self, steps: Iterable[Step]) -> BaseException | None:
        return drive(steps, limit=self._calls_in_flight, on_done=self.on_progress, stops=_STOPS)

    def _calls_in_flight(self) -> int:
        """Asked before each new step: the client knows its rate cap and the latency it sees."""
        hint = getattr(self.gallery, "calls_in_flight", None)
        return hint() if callable(hint) else 1

    def on_progress(self, n: int) -> None:
        """After each finished action (its outcome recorded): report it, then stop here if asked to."""
        self._on_progress(n)
        if self.should_stop():
            raise _Interrupted

    def _remap(self, remap: Remap, report: Report) -> None:
        self.store.map_files(self.mirror.name, remap.paths, remap.entry.id)
        report.remapped += 1

    def _add(
        self, add: Add, report: Report, *, done: list[str] | None = None, scanned: ScannedFile | None = None
    ) -> Step:
        """Journaled add; on success the path goes to `done` (default: report.added). scanned: the file as
        the walk saw it, saved with the intent (an early add's: see EarlyAdds)."""
        try:
            data = self.read_upload(self.mirror.folder, add.path, add.content_hash)
        except UploadChangedError as e:
            (report.pending if e.still_changing else report.failed).append((add.path, str(e)))
            return 1
        spool = self._spool(data)

        def brief_for(entry_id: int) -> str:
            return render_brief(
                self.mirror.brief,
                entry_id=entry_id,
                path=add.path,
                mirror=self.mirror.name,
                library=self.mirror.library,
            )

        entry, jid = self.store.begin_add(
            self.mirror.name,
            self.library.name,
            add.content_hash,
            brief_for,
            add.tags,
            add.class_ids,
            str(spool),
            scanned=scanned,
        )
        try:
            cont_sign = yield from self._send_add(data, entry.brief, add.tags, add.class_ids)
        except GalleryRequestError as e:
            self._refuse(jid, entry.id, add.path, f"refused by the gallery: {e}", spool, report)
            return 1
        except StillDeletingError as e:
            self.store.abort_add(jid, entry.id, str(e))
            spool.unlink(missing_ok=True)
            report.failed.append((add.path, str(e)))
            return 1
        try:
            self.store.finish_add(jid, entry.id, cont_sign, add.paths)
        except ContSignTakenError as e:
            # The gallery calls this the same image as an entry another record owns; two records for one
            # remote entry would let one delete it under the other, so this file stays out.
            self._refuse(
                jid, entry.id, add.path, _taken_reason(e, self.mirror.name), spool, report, taken_by=e.cont_sign
            )
            return 1
        spool.unlink(missing_ok=True)
        (report.added if done is None else done).append(add.path)
        return 1

    def _refuse(
        self, jid: int, entry_id: int, path: str, reason: str, spool: Path, report: Report, taken_by: str | None = None
    ) -> None:
        self.store.abort_add(jid, entry_id, reason)
        self.store.set_verdict(self.mirror.name, path, "rejected", reason, taken_by=taken_by)
        spool.unlink(missing_ok=True)
        report.rejected.append((path, reason))

    def _send_add(
        self,
        data: bytes,
        brief: str,
        tags: Sequence[int],
        class_ids: tuple[int | None, int | None],
        *,
        library: str | None = None,
    ) -> Generator[Callable[[], Any], Any, str]:
        """Add, adopting the existing entry when the gallery says the identical image is already there."""
        lib = library or self.library.name
        try:
            return (
                yield lambda: self.gallery.add(
                    lib, image=data, brief=brief, tags=tags, class_ids=_class_ids_or_none(class_ids)
                )
            )
        except GalleryDuplicateError as e:
            duplicate = e
        if duplicate.cont_sign and self.store.deleted_lately(lib, duplicate.cont_sign, DELETE_SETTLE_S):
            # Either our own add landed before (a retry after a crash or a lost answer): the entry
            # carries this add's brief, unique by its id; or it is the entry we deleted, still dying.
            if (yield from self._find_by_brief(lib, data, brief)) == duplicate.cont_sign:
                return duplicate.cont_sign
            raise StillDeletingError(
                f"the gallery still holds entry {duplicate.cont_sign}, deleted lately (deletes can take hours to "
                "take effect); will add it again on a later run"
            )
        if duplicate.cont_sign:
            log.info("gallery already had this image (%s); adopting it", duplicate.cont_sign)
            return duplicate.cont_sign
        found = yield from self._find_by_brief(lib, data, brief)
        if found:
            return found
        raise GalleryRequestError(
            "the gallery says this image is already there but did not say which entry, and no entry with "
            "our brief was found by searching; another program may have added it"
        )

    def _find_by_brief(self, library: str, data: bytes, brief: str) -> Generator[Callable[[], Any], Any, str | None]:
        result = yield lambda: self.gallery.search(library, image=data, rn=100)
        for hit in getattr(result, "hits", []):
            if hit.brief == brief:
                return str(hit.cont_sign)
        return None

    def _update(self, update: Update, report: Report) -> Step:
        entry = update.entry
        cont_sign = entry.cont_sign
        assert cont_sign is not None  # the plan updates live entries only (an add in flight has no cont_sign)
        jid = self.store.begin_update(self.mirror.name, entry.id, update.brief, update.tags, update.class_ids)
        try:
            yield lambda: self.gallery.update(
                self.library.name,
                cont_sign=cont_sign,
                brief=update.brief,
                tags=list(update.tags),
                class_ids=_class_ids_or_none(update.class_ids),
            )
        except GalleryNotFoundError:
            # Someone removed the entry behind our back: forget it locally and upload the image again.
            self.store.fail(jid, "entry missing from the gallery; re-adding")
            djid = self.store.begin_delete(self.mirror.name, [entry.id])
            self.store.finish_delete(djid)
            yield from self._add(
                Add(entry.content_hash, update.path, update.paths, update.tags, update.class_ids), report
            )
            return 1
        except GalleryRequestError as e:
            self.store.fail(jid, str(e))
            report.failed.append((update.path, f"update refused by the gallery: {e}"))
            return 1
        self.store.finish_update(jid, update.paths)
        report.updated.append(update.path)
        return 1

    def _readd(self, readd: Readd, report: Report) -> Step:
        """Delete, then add anew (the old entry must go first: the gallery refuses an identical image).
        A crash in between leaves no entry for the image, so the next plan adds it: nothing is lost."""
        yield from self._delete_batch(readd.entry.library, [readd.entry])
        yield from self._add(readd.add, report, done=report.updated)  # to the user, a relabel is an update
        return 2

    def _deletes(self, deletes: Iterable[Delete], report: Report) -> Iterator[Step]:
        """One step per batch call. An entry is deleted from the library it was added to (the mirror's
        library may have changed)."""
        by_library: dict[str, list[Entry]] = {}
        for d in deletes:
            by_library.setdefault(d.entry.library, []).append(d.entry)
        for library, entries in by_library.items():
            cap = get_library(library).batch_delete_max
            for i in range(0, len(entries), cap):
                yield self._counted(self._delete_batch(library, entries[i : i + cap]), report)

    def _counted(self, batch: Step, report: Report) -> Step:
        n = yield from batch
        report.deleted += n
        return n

    def _delete_batch(self, library: str, entries: Sequence[Entry]) -> Step:
        """One journaled delete call: intent, call, outcome."""
        jid = self.store.begin_delete(self.mirror.name, [e.id for e in entries])
        yield from self._send_delete(library, [e.cont_sign for e in entries if e.cont_sign])
        self.store.finish_delete(jid)
        return len(entries)

    def _send_delete(self, library: str, cont_signs: Sequence[str]) -> Generator[Callable[[], Any], Any, None]:
        if not cont_signs:
            return
        try:
            yield lambda: self.gallery.delete_many(library, cont_signs)
            return
        except GalleryNotFoundError:
            return  # already gone: that is what we wanted
        except GalleryRequestError as e:
            if len(cont_signs) == 1:
                raise
            # A refused batch (the separator or batch cap for this library is unconfirmed, see
            # docs/fidelity.md): fall back to one call per entry rather than stall on it every run.
            log.warning(
                "%s refused a batch delete of %d entries (%s); deleting one by one", library, len(cont_signs), e
            )
        for sign in cont_signs:
            try:
                yield partial(self.gallery.delete_many, library, [sign])
            except GalleryNotFoundError:
                pass

    def _spool(self, data: bytes) -> Path:
        """Keep the bytes of an in-flight add, so recovery can finish or undo it even if the file is gone."""
        path = self.spool_dir / f"{uuid.uuid4().hex}.img"
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            path.unlink(missing_ok=True)  # no intent refers to it yet: nothing to recover
            if e.errno in DISK_FULL_ERRNOS:
                raise disk_full(self.spool_dir.parent, "spooling an upload") from None
            raise ManifestError(f"cannot spool an upload in {self.spool_dir}: {e.strerror}") from None
        return path

    # ------------------------------------------------------------------ crash recovery

    def recover(self, items: Iterable[Any], report: Report) -> None:
        """Finish the journal's open intents for this mirror (see the module docstring); a GalleryError
        that stops it is raised once the calls under way have ended."""
        mine = (item for item in items if item.mirror == self.mirror.name)
        stop = drive((self._recover(item, report) for item in mine), limit=self._calls_in_flight, stops=(GalleryError,))
        if stop is not None:
            raise stop

    def _recover(self, item: Any, report: Report) -> Step:
        if item.op == "add":
            yield from self._recover_add(item, report)
        elif item.op == "delete":
            yield from self._send_delete(item.library, [c for c in item.payload.get("cont_signs", []) if c])
            self.store.finish_delete(item.id)
            report.recovered += 1
        else:
            self.store.fail(item.id, "interrupted; the next plan re-issues it if still needed")
        return 0

    def _recover_add(self, item: Any, report: Report) -> Generator[Callable[[], Any], Any, None]:
        payload = item.payload
        entry_id = item.entry_ids[0]
        spool = Path(payload["spool"]) if payload.get("spool") else None
        if spool is None or not spool.exists():
            # The spool is written before the intent, so a missing spool means the bytes were never sent.
            self.store.abort_add(item.id, entry_id, "interrupted before the upload")
            return
        data = spool.read_bytes()
        try:
            cont_sign = yield from self._send_add(
                data,
                payload["brief"],
                payload.get("tags", []),
                tuple(payload.get("class_ids", (None, None))),
                library=item.library,
            )
            self.store.finish_add(item.id, entry_id, cont_sign, ())
        except (GalleryRequestError, StillDeletingError) as e:
            self.store.abort_add(item.id, entry_id, str(e))
        except ContSignTakenError as e:
            self.store.abort_add(item.id, entry_id, _taken_reason(e, item.mirror))
        else:
            report.recovered += 1
        spool.unlink(missing_ok=True)


class ScanAborted(Exception):
    """Raised into the walk by EarlyAdds once the calls stopped (quota, auth, gallery down, shutdown):
    the rest of the folder is for the next run."""


class EarlyAdds:
    """Adds started while the walk is still running (plan.early_add), so that reading, hashing and
    validating the folder overlaps the calls instead of coming before all of them. The scan calls it
    with each file it judged (scan_folder's on_examined); a file that qualifies gets its row saved with its
    intent (one transaction; its add's outcome maps to the row) and its call sent like any add, while the
    walk goes on as soon as a call slot is free. `finish()` (before the plan is made) waits for the last ones.

    An early add that ended without an entry (refused, failed, or the file changed since it was read)
    is reported like any add, and `verdicts()` says what the plan must take its file for, so it is not
    added a second time in the same run and a refusal is kept in the manifest."""

    def __init__(self, executor: Executor, report: Report, on_started: Callable[[int], None] = lambda n: None) -> None:
        self._x = executor
        self._report = report
        self._taken: set[str] = set()
        self._on_started = on_started
        self._flight = Flight(limit=executor._calls_in_flight, on_done=executor.on_progress, stops=_STOPS)
        self.paths: list[str] = []
        self._finished = False

    def __enter__(self) -> EarlyAdds:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        self._flight.__exit__(kind, error, tb)

    def held(self, entries: Iterable[Entry]) -> None:
        """The mirror's entries before the walk: their images are never early adds."""
        self._taken.update(e.content_hash for e in entries)

    def __call__(self, f: ScannedFile) -> None:
        if self._flight.stopped is not None:
            raise ScanAborted
        add = early_add(self._x.mirror, f, self._taken)
        if add is None:
            self._flight.poll()
            return
        self._taken.add(add.content_hash)
        self.paths.append(f.path)
        self._on_started(len(self.paths))
        # The file's row is saved with the add's intent (one transaction, not two): the add's outcome maps
        # to it. An add that never begins (the file changed since it was read) leaves no row: the plan saves
        # it with the scan's other new files.
        self._flight.submit(self._x._add(add, self._report, scanned=f))
        if self._flight.stopped is not None:
            raise ScanAborted

    def finish(self) -> int:
        """Wait for the early adds under way and record how the calls ended; how many were started."""
        if not self._finished:
            self._finished = True
            _record_stop(self._flight.drain(), self._report, self._x.should_stop)
            _tidy(self._report)
        return len(self.paths)

    def verdicts(self) -> dict[str, tuple[Verdict, str]]:
        """path → (verdict, reason) for the early adds that did not end in an entry (after finish())."""
        report = self._report
        kinds: tuple[tuple[Verdict, list[tuple[str, str]]], ...] = (
            ("unstable", report.pending),
            ("error", report.failed),
            ("rejected", report.rejected),
        )
        ended = {path: (kind, reason) for kind, files in kinds for path, reason in files}
        added = set(report.added)
        return {p: ended[p] for p in self.paths if p in ended and p not in added}


def _record_stop(stop: BaseException | None, report: Report, should_stop: Callable[[], bool]) -> None:
    # A call that failed while shutting down was not retried (retries_end_when): that is the shutdown.
    if isinstance(stop, _Interrupted) or (isinstance(stop, GalleryError) and should_stop()):
        report.interrupted = True  # the caller is shutting down: the rest is for the next run
    elif isinstance(stop, GalleryError):  # transient (after retries), quota, auth: every later call fails too
        report.stopped = report.stopped or stop


def _tidy(report: Report) -> None:
    """Calls end in any order: the report lists files by path, run after run, each once (an early add
    refused or left pending is reported by the add and again by the plan, which takes its file as such)."""
    report.added[:] = sorted(set(report.added))
    report.updated[:] = sorted(set(report.updated))
    for files in (report.failed, report.pending, report.rejected):
        files[:] = sorted(set(files))


def _taken_reason(e: ContSignTakenError, mirror: str) -> str:
    """Why a file was refused as another record's image, and how to end it: the file is tried again by
    itself once that entry is deleted (Store._free_taken)."""
    head = f"the gallery holds this image already as entry {e.cont_sign}"
    why = "(one gallery entry cannot stand for two records)"
    if e.other_mirror == mirror:
        return f"{head}, which another file of this folder holds (the gallery judges them the same picture) {why}"
    if e.other_folder is not None and not Path(e.other_folder).is_dir():
        # The usual way to get here: a folder synced, then deleted (its deletes withheld), then a copy of it
        # synced under another name.
        return (
            f"{head}, which mirror {e.other_mirror!r} owns {why}; its folder {e.other_folder} is gone: if you "
            f"removed it on purpose, `imgsync reconcile {e.other_mirror} --force` deletes its entries and this "
            "file is added at the next run"
        )
    where = f" (folder {e.other_folder})" if e.other_folder is not None else ""
    return f"{head}, which mirror {e.other_mirror!r}{where} owns {why}; remove one of the copies"


def _class_ids_or_none(ids: tuple[int | None, int | None]) -> tuple[int | None, int | None] | None:
    return ids if any(v is not None for v in ids) else None


def sweep_spool(spool_dir: Path, referenced: set[str]) -> None:
    """Remove spooled images no open intent refers to (left by a crash between spool and intent)."""
    if not spool_dir.is_dir():
        return
    for name in os.listdir(spool_dir):
        path = spool_dir / name
        if str(path) not in referenced:
            path.unlink(missing_ok=True)
