"""Decide what to send to the gallery. Pure: no I/O, no clock; (disk, manifest, config) in, Plan out.

The decision table (one remote entry per distinct image per mirror; `h` = content hash):

  files with content h       entry for h      condition                         → action
  ------------------------   --------------   -------------------------------   -----------------------------------
  ≥ 1 valid                  none                                               Add (one upload, however many paths)
  ≥ 1 valid                  live             brief or labels would change      Update by cont_sign (rename/move,
                                                                                 tag rule or template change)
  ≥ 1 valid                  live             labels would be cleared (all      Readd: delete, then add again (an
                                              tags, or a class id, removed)     update cannot clear a label)
  ≥ 1 valid                  live             only the set of paths changed     Remap (manifest only, no call)
  none valid                 live             no unstable/unreadable file       Delete (batched per library cap)
                                              still maps to it
  —                          deleting         (a delete that did not finish)    Delete again (gone counts as done)
  any                        in another       the mirror's library changed      Delete there, Add in the new one
                             library

Consequences: a rename/move costs one update and no upload; a changed file costs an add of the new
image then a delete of the old entry; identical copies share one entry and the last copy to go
deletes it; a file that is still being written or cannot be read right now keeps its old entry.

Deletes are withheld (and the reason reported) when the folder is missing, not a directory or
unreadable (folder.check_folder), when the scan could not read every directory, when the folder is on
another device than at the last run that left it in step, when it holds no valid image while entries
came from it, or when they exceed the mirror's max_delete guard. The plan is computed afresh on every
run and the pipeline keeps the last good device, so a guard keeps withholding until its condition
clears. `force` lifts all of them but an unreadable folder or directory (a file there may still exist).

Early adds (`early_add`): while the walk is still running, a valid file whose image no entry of the
mirror holds and no earlier file of this walk had is an Add whatever the rest of the folder holds, so
the pipeline starts it at once and the scan overlaps the calls; the plan made after the walk sees its
entry (its other copies are then a Remap).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from imgsync.brief import render_brief
from imgsync.config import MirrorConfig
from imgsync.model import Entry, KnownFile, ScannedFile

ClassIds = tuple[int | None, int | None]


@dataclass(frozen=True, slots=True)
class Add:
    content_hash: str
    path: str  # the primary path: the one named in the brief and read for the upload
    paths: tuple[str, ...]
    tags: tuple[int, ...]
    class_ids: ClassIds


@dataclass(frozen=True, slots=True)
class Update:
    entry: Entry
    path: str
    paths: tuple[str, ...]
    brief: str
    tags: tuple[int, ...]
    class_ids: ClassIds


@dataclass(frozen=True, slots=True)
class Readd:
    """Delete `entry`, then add its image again with `add`'s labels: for a label change the update call
    cannot express (the API has no way to clear an entry's tags or a class id, only to set them)."""

    entry: Entry
    add: Add


@dataclass(frozen=True, slots=True)
class Remap:
    entry: Entry
    paths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    entry: Entry


@dataclass(frozen=True, slots=True)
class Reject:
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    adds: tuple[Add, ...] = ()
    updates: tuple[Update, ...] = ()
    readds: tuple[Readd, ...] = ()
    remaps: tuple[Remap, ...] = ()
    deletes: tuple[Delete, ...] = ()
    rejects: tuple[Reject, ...] = ()
    #: files left for a later run (still changing, unreadable): (path, reason)
    pending: tuple[tuple[str, str], ...] = ()
    #: deletes the plan would make but may not, and why
    withheld: tuple[Delete, ...] = ()
    withheld_reason: str | None = None
    withheld_forceable: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def calls(self) -> int:
        """Remote actions in this plan (deletes count one each; the executor batches them)."""
        return len(self.adds) + len(self.updates) + 2 * len(self.readds) + len(self.deletes)

    @property
    def is_empty(self) -> bool:
        return not (self.adds or self.updates or self.readds or self.remaps or self.deletes)


def make_plan(
    mirror: MirrorConfig,
    scanned: Mapping[str, ScannedFile],
    known: Mapping[str, KnownFile],
    entries: Mapping[int, Entry],
    *,
    scan_complete: bool = True,
    folder_problem: str | None = None,
    moved_folder: str | None = None,
    force: bool = False,
) -> Plan:
    """folder_problem: why the folder could not be listed (missing, not a directory, unreadable; then
    `scanned` is empty); moved_folder: why it may not be the folder synced last time (another device)."""
    wanted: dict[str, list[str]] = defaultdict(list)  # content hash → valid paths
    held: set[int] = set()  # entries kept alive by files we cannot judge right now
    rejects: list[Reject] = []
    pending: list[tuple[str, str]] = []
    for path in sorted(scanned):
        f = scanned[path]
        if f.verdict == "ok" and f.content_hash:
            wanted[f.content_hash].append(path)
        elif f.verdict == "rejected":
            rejects.append(Reject(path, f.reason or "rejected"))
        else:
            pending.append((path, f.reason or f.verdict))
            old = known.get(path)
            if old is not None and old.entry_id is not None:
                held.add(old.entry_id)

    by_hash: dict[str, Entry] = {}
    deletes: list[Delete] = []
    for e in sorted(entries.values(), key=lambda e: e.id):
        if e.state == "deleting":
            deletes.append(Delete(e))
        elif e.library != mirror.library:
            deletes.append(Delete(e))  # the mirror moved to another library: its images go there anew
        else:
            by_hash[e.content_hash] = e

    adds: list[Add] = []
    updates: list[Update] = []
    readds: list[Readd] = []
    remaps: list[Remap] = []
    for h in sorted(wanted, key=lambda h: wanted[h][0]):
        paths = tuple(wanted[h])
        entry = by_hash.pop(h, None)
        if entry is None:
            tags, class_ids = _labels(mirror, paths[0])
            adds.append(Add(h, paths[0], paths, tags, class_ids))
            continue
        primary, brief = _keep_primary(mirror, entry, paths)
        tags, class_ids = _labels(mirror, primary)
        if _clears_labels(entry, tags, class_ids):
            readds.append(Readd(entry, Add(h, primary, paths, tags, class_ids)))
        elif (brief, tags, class_ids) != (entry.brief, entry.tags, (entry.class_id1, entry.class_id2)):
            updates.append(Update(entry, primary, paths, brief, tags, class_ids))
        elif any(known.get(p) is None or known[p].entry_id != entry.id for p in paths):
            remaps.append(Remap(entry, paths))
    deletes += [Delete(e) for e in by_hash.values() if e.id not in held]

    withheld_reason, forceable = _why_withhold(
        deletes,
        entries,
        scanned,
        scan_complete=scan_complete,
        folder_problem=folder_problem,
        moved_folder=moved_folder,
        mirror=mirror,
    )
    withheld: tuple[Delete, ...] = ()
    if withheld_reason and not (force and forceable):
        withheld, deletes = tuple(deletes), []
    else:
        withheld_reason = None
    return Plan(
        adds=tuple(adds),
        updates=tuple(updates),
        readds=tuple(readds),
        remaps=tuple(remaps),
        deletes=tuple(deletes),
        rejects=tuple(rejects),
        pending=tuple(pending),
        withheld=withheld,
        withheld_reason=withheld_reason,
        withheld_forceable=forceable,
    )


def _why_withhold(
    deletes: list[Delete],
    entries: Mapping[int, Entry],
    scanned: Mapping[str, ScannedFile],
    *,
    scan_complete: bool,
    folder_problem: str | None,
    moved_folder: str | None,
    mirror: MirrorConfig,
) -> tuple[str | None, bool]:
    """(reason, forceable) when deletes must not go ahead. An entry already being deleted (a delete
    decided and sent by an earlier run) is finished whatever the folder looks like now."""
    if not any(d.entry.state != "deleting" for d in deletes):
        return None, False
    if folder_problem:
        if not scan_complete:  # unreadable: the files may all still be there
            return f"{folder_problem}; nothing deleted", False
        return f"{folder_problem}; nothing deleted (use --force if you removed it on purpose)", True
    if not scan_complete:
        return "the scan could not read every directory, so missing files may only be unreadable", False
    if moved_folder:
        return f"{moved_folder}; use --force if that is expected", True
    if not scanned:
        return (
            f"the folder {mirror.folder} is empty now, but {len(deletes)} entries came from it "
            "(an unmounted disk?); use --force if you really emptied it"
        ), True
    live = sum(1 for e in entries.values() if e.state != "deleting")
    if mirror.max_delete.refuses(len(deletes), live):
        g = mirror.max_delete
        limit = f"{g.max_count}" if g.max_count is not None else f"{g.fraction:.0%} of {live} entries"
        return (
            f"{len(deletes)} deletes exceed the max_delete guard of mirror {mirror.name!r} ({limit}); "
            "use --force to delete them anyway"
        ), True
    return None, False


def _clears_labels(entry: Entry, tags: tuple[int, ...], class_ids: ClassIds) -> bool:
    """Would the entry lose all its tags, or a class id? An update can only set labels (an omitted
    field is left as it is), so that takes a delete and a fresh add."""
    if entry.tags and not tags:
        return True
    old_ids = (entry.class_id1, entry.class_id2)
    return any(old is not None and new is None for old, new in zip(old_ids, class_ids, strict=True))


def _brief(mirror: MirrorConfig, entry_id: int, path: str) -> str:
    return render_brief(mirror.brief, entry_id=entry_id, path=path, mirror=mirror.name, library=mirror.library)


def _keep_primary(mirror: MirrorConfig, entry: Entry, paths: tuple[str, ...]) -> tuple[str, str]:
    """(primary path, its brief): the path the entry's brief already names if it is still valid (no
    needless update), else the first."""
    first = ""
    for p in paths:
        brief = _brief(mirror, entry.id, p)
        if brief == entry.brief:
            return p, brief
        first = first or brief
    return paths[0], first


def early_add(mirror: MirrorConfig, f: ScannedFile, taken: set[str]) -> Add | None:
    """The Add the plan would make for `f` whatever else the folder holds, if it is one; `taken`: the
    content hashes of every entry of the mirror (any state, any library) and of this walk's earlier
    early adds (the caller adds each returned one). Only a plain first copy qualifies: anything an
    entry already stands for (a move, a copy, a relabel, a library change) waits for the whole plan."""
    if f.verdict != "ok" or not f.content_hash or f.content_hash in taken:
        return None
    tags, class_ids = _labels(mirror, f.path)
    return Add(f.content_hash, f.path, (f.path,), tags, class_ids)


def _labels(mirror: MirrorConfig, path: str) -> tuple[tuple[int, ...], ClassIds]:
    rule = mirror.label_for(path)
    if rule is None:
        return (), (None, None)
    if mirror.lib.labels == "class_id":
        return (), (rule.class_id1, rule.class_id2)
    return rule.tags, (None, None)
