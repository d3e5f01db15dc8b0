"""The manifest: imgsync's only record of what each mirror's gallery holds (the cloud has no list call).

Store takes and returns the plain values of imgsync.model (and the small frozen records below), never
ORM rows. Every method is one transaction. Remote operations are journaled: begin_* commits an intent
*before* the caller makes the remote call, and finish_* / abort_add / fail commits the outcome, so after a
kill -9 at any point `open_journal()` lists exactly the calls whose outcome is unknown.

One writer at a time (the reconcile/watch holding StateLock); any number of readers (`imgsync status`)
alongside it, thanks to WAL. Nothing here takes or stores a key, secret or token.
"""

from __future__ import annotations

import json
import logging
import threading
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Row,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from imgsync.clock import SYSTEM_CLOCK, Clock
from imgsync.errors import ManifestError, disk_full
from imgsync.manifest import lite, migrate
from imgsync.manifest.engine import create_manifest_engine, writer
from imgsync.manifest.records import (
    MirrorState,
    RunInfo,
    dt,
    dt_or_none,
    from_i64,
    to_i64,
)
from imgsync.manifest.tables import (
    VERDICTS,
    EntryRow,
    FileRow,
    JournalRow,
    MirrorStateRow,
    RunRow,
    SettingRow,
)
from imgsync.model import Entry, KnownFile, ScannedFile, Verdict

log = logging.getLogger("imgsync.manifest")

JournalOp = Literal["add", "update", "delete"]
JournalState = Literal["intent", "done", "failed"]
ClassIds = tuple[int | None, int | None]


# Core tables: the Store runs Core statements on a Connection and reads plain Rows (no ORM session,
# no identity map to go stale between transactions).
_FILES = typing.cast(Table, FileRow.__table__)  # (declarative gives FromClause; each is a Table)
_ENTRIES = typing.cast(Table, EntryRow.__table__)
_JOURNAL = typing.cast(Table, JournalRow.__table__)
_RUNS = typing.cast(Table, RunRow.__table__)
_STATES = typing.cast(Table, MirrorStateRow.__table__)
_SETTINGS = typing.cast(Table, SettingRow.__table__)

# The statements of an add, built once: every file of a first sync runs them, on the thread that also
# walks the folder, and constructing a statement costs 3-7x what running a built one does (SQLAlchemy
# makes and hashes its cache key each time: ~360 µs against ~100 µs for an INSERT). A bindparam in a
# SET clause may not carry its column's name, hence the new_ names.
_INSERT_ENTRY = insert(_ENTRIES)
_SET_BRIEF = update(_ENTRIES).where(_ENTRIES.c.id == bindparam("entry_id")).values(brief=bindparam("new_brief"))
_ENTRY_BY_ID = select(_ENTRIES).where(_ENTRIES.c.id == bindparam("entry_id"))
_GO_LIVE = (
    update(_ENTRIES)
    .where(_ENTRIES.c.id == bindparam("entry_id"), _ENTRIES.c.state == "adding")
    .values(cont_sign=bindparam("new_sign"), state="live", updated_at=bindparam("now"))
)
_INSERT_INTENT = insert(_JOURNAL)
_ITEM_BY_ID = select(_JOURNAL).where(_JOURNAL.c.id == bindparam("journal_id"))
_CLOSE_ITEM = (
    update(_JOURNAL)
    .where(_JOURNAL.c.id == bindparam("journal_id"))
    .values(state=bindparam("new_state"), error=bindparam("new_error"), finished_at=bindparam("now"))
)
_MAP_FILE = (
    update(_FILES)
    .where(_FILES.c.mirror == bindparam("m"), _FILES.c.path == bindparam("p"))
    .values(entry_id=bindparam("new_entry"))
)
_FORGET_FILE = delete(_FILES).where(_FILES.c.mirror == bindparam("m"), _FILES.c.path == bindparam("p"))
#: what a scan sets of a file's row (its entry_id stays)
_SCANNED_FIELDS = (
    "size",
    "mtime_ns",
    "inode",
    "content_hash",
    "verdict",
    "reason",
    "hashed_at_ns",
    "updated_at",
    "taken_by",
)
_insert_file = sqlite_insert(_FILES)
_UPSERT_FILE = _insert_file.on_conflict_do_update(
    index_elements=[_FILES.c.mirror, _FILES.c.path], set_={c: _insert_file.excluded[c] for c in _SCANNED_FIELDS}
)


@dataclass(frozen=True, slots=True)
class JournalItem:
    """One journaled remote operation. payload: add → brief, tags, class_ids, spool, content_hash;
    update → brief, tags, class_ids, cont_sign, old (the previous brief/tags/class_ids);
    delete → cont_signs (parallel to entry_ids; None for an entry that never got one)."""

    id: int
    op: JournalOp
    mirror: str
    library: str
    entry_ids: tuple[int, ...]
    payload: Mapping[str, Any]
    state: JournalState
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class ContSignTakenError(ManifestError):
    """finish_add got a gallery id that another entry already holds.

    The gallery answered an add with "already there" (216681) and named an entry this manifest already
    records: under another mirror on the same library, or under another content hash of this mirror (the
    cloud judged two different files the same image). Two records for one remote entry would let one of
    them delete it under the other, so the manifest refuses; the caller should abort the add.
    """

    def __init__(
        self, message: str, *, cont_sign: str, other_entry_id: int, other_mirror: str, other_folder: str | None = None
    ) -> None:
        super().__init__(message)
        self.cont_sign = cont_sign
        self.other_entry_id = other_entry_id
        self.other_mirror = other_mirror
        #: the owning mirror's folder at its last run (None: it never finished one)
        self.other_folder = other_folder


class Store:
    """The manifest in one SQLite file. Open with Store.open(path); use as a context manager or close()."""

    def __init__(self, engine: Engine, path: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self.path = path
        self._clock = clock
        self._closed = False
        self._unbound_gallery: str | None = None
        self._freed: set[str] = set()  # see take_freed
        self._freed_lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, clock: Clock = SYSTEM_CLOCK) -> Store:
        """Open (creating it and its directory if needed) and upgrade the manifest to this code's schema.

        Refuses (ManifestError) a file that is not an SQLite database, a database that is not a manifest,
        and a manifest whose schema is newer than this imgsync; such files are left untouched.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ManifestError(f"cannot create the directory for the manifest {path}: {e.strerror}") from None
        if path.exists() and not path.is_file():
            raise ManifestError(f"the manifest path {path} exists but is not a file")
        engine = create_manifest_engine(path)
        try:
            migrate.upgrade(engine, path)
        except ManifestError:
            engine.dispose()
            raise
        except SQLAlchemyError as e:
            engine.dispose()
            raise ManifestError(f"cannot open the manifest {path}: {_cause(e)}") from e
        return cls(engine, path, clock)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def schema_revision(self) -> str | None:
        return migrate.current_revision(self._engine)

    # ------------------------------------------------------------------ files

    def known_files(self, mirror: str) -> dict[str, KnownFile]:
        with self._read() as conn:
            rows = conn.execute(
                select(
                    FileRow.path,
                    FileRow.size,
                    FileRow.mtime_ns,
                    FileRow.inode,
                    FileRow.content_hash,
                    FileRow.verdict,
                    FileRow.reason,
                    FileRow.entry_id,
                    FileRow.hashed_at_ns,
                ).where(FileRow.mirror == mirror)
            )
            return {
                r.path: KnownFile(
                    r.path,
                    r.size,
                    r.mtime_ns,
                    from_i64(r.inode),
                    r.content_hash,
                    r.verdict,
                    r.reason,
                    r.entry_id,
                    r.hashed_at_ns,
                )
                for r in rows
            }

    def save_scan(self, mirror: str, files: Iterable[ScannedFile], gone: Iterable[str] = ()) -> None:
        """Record a scan in one transaction: upsert `files` (each row keeps its entry_id), forget `gone`.

        A path both scanned and listed as gone is kept (the scan saw it). One executemany per statement,
        so 100k files take about a second.
        """
        rows = _file_rows(mirror, files, self._clock.time())
        gone_rows = [{"m": mirror, "p": p} for p in gone]
        with self._write() as conn:
            if gone_rows:
                conn.execute(_FORGET_FILE, gone_rows)
            if rows:
                conn.execute(_UPSERT_FILE, rows)

    def set_verdict(
        self, mirror: str, path: str, verdict: Verdict, reason: str | None, *, taken_by: str | None = None
    ) -> None:
        """taken_by: the file was refused because the gallery holds its image as that entry (cont_sign) of
        another record; forgetting that entry has the file judged again (see _forget_entries)."""
        if verdict not in VERDICTS:
            raise ManifestError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        with self._write() as conn:
            n = conn.execute(
                update(FileRow)
                .where(FileRow.mirror == mirror, FileRow.path == path)
                .values(verdict=verdict, reason=reason, taken_by=taken_by, updated_at=self._clock.time())
            ).rowcount
            if n == 0:
                raise ManifestError(f"mirror {mirror!r} has no file {path!r} in the manifest")

    def map_files(self, mirror: str, paths: Iterable[str], entry_id: int | None) -> None:
        """Point the files at `paths` to `entry_id` (None: to no entry). Paths the manifest does not list
        are skipped (the next scan and plan map them)."""
        with self._write() as conn:
            if entry_id is not None:
                self._entry_row(conn, entry_id, mirror)
            self._map(conn, mirror, paths, entry_id)

    # ------------------------------------------------------------------ entries + journal

    def entries(self, mirror: str) -> dict[int, Entry]:
        with self._read() as conn:
            rows = conn.execute(select(_ENTRIES).where(EntryRow.mirror == mirror)).all()
            return {r.id: _entry(r) for r in rows}

    def locate(self, library: str, cont_signs: Iterable[str]) -> dict[str, list[tuple[str, str, str]]]:
        """See lite.locate: cont_sign → [(mirror, folder, relative path)], how a hit leads back to files."""
        with self._read() as conn:
            return lite.locate(self._raw(conn), library, cont_signs)

    def begin_add(
        self,
        mirror: str,
        library: str,
        content_hash: str,
        render_brief: Callable[[int], str],
        tags: tuple[int, ...],
        class_ids: ClassIds,
        spool: str | None,
        *,
        scanned: ScannedFile | None = None,
    ) -> tuple[Entry, int]:
        """Insert the entry (state "adding"; brief = render_brief(its id)) and the add intent, together;
        with `scanned`, the file's row as save_scan would (an add started while the walk runs: its
        outcome maps to that row), in the same transaction. Returns (entry, journal_id). If render_brief
        raises, nothing is written."""
        now = self._clock.time()
        file_rows = _file_rows(mirror, [scanned], now) if scanned is not None else []
        with self._write() as conn:
            if file_rows:
                conn.execute(_UPSERT_FILE, file_rows)
            try:
                entry_id = _inserted_id(
                    conn.execute(
                        _INSERT_ENTRY,
                        {
                            "mirror": mirror,
                            "library": library,
                            "cont_sign": None,
                            "content_hash": content_hash,
                            "brief": "",
                            "tags": _tags_text(tags),
                            "class_id1": class_ids[0],
                            "class_id2": class_ids[1],
                            "state": "adding",
                            "created_at": now,
                            "updated_at": now,
                        },
                    )
                )
            except IntegrityError:
                other = conn.execute(
                    select(EntryRow.id, EntryRow.state).where(
                        EntryRow.mirror == mirror, EntryRow.content_hash == content_hash, EntryRow.state != "deleting"
                    )
                ).first()
                if other is None:
                    raise
                raise ManifestError(
                    f"mirror {mirror!r} already has entry {other.id} ({other.state}) for image {content_hash[:12]}…; "
                    "one entry per distinct image per mirror"
                ) from None
            brief = render_brief(entry_id)
            conn.execute(_SET_BRIEF, {"entry_id": entry_id, "new_brief": brief})
            payload = {
                "brief": brief,
                "tags": list(tags),
                "class_ids": list(class_ids),
                "spool": spool,
                "content_hash": content_hash,
            }
            journal_id = self._intent(conn, "add", mirror, library, [entry_id], payload, now)
            row = conn.execute(_ENTRY_BY_ID, {"entry_id": entry_id}).one()
            return _entry(row), journal_id

    def finish_add(self, journal_id: int, entry_id: int, cont_sign: str, paths: Iterable[str]) -> None:
        """The add went through: the entry goes live with `cont_sign`, the files at `paths` map to it."""
        if not cont_sign:
            raise ManifestError(f"finish_add of entry {entry_id}: the gallery id (cont_sign) is empty")
        with self._write() as conn:
            item = self._open_item(conn, journal_id, "add", entry_id)
            try:
                n = conn.execute(
                    _GO_LIVE, {"entry_id": entry_id, "new_sign": cont_sign, "now": self._clock.time()}
                ).rowcount
            except IntegrityError:
                other = conn.execute(
                    select(EntryRow.id, EntryRow.mirror).where(
                        EntryRow.library == item.library, EntryRow.cont_sign == cont_sign
                    )
                ).first()
                if other is None:
                    raise
                other_folder = conn.execute(
                    select(MirrorStateRow.folder).where(MirrorStateRow.mirror == other.mirror)
                ).scalar()
                raise ContSignTakenError(
                    f"the gallery returned {cont_sign} for entry {entry_id}, but entry {other.id} of mirror "
                    f"{other.mirror!r} already holds that id in library {item.library!r}: the gallery treats "
                    "them as the same image",
                    cont_sign=cont_sign,
                    other_entry_id=other.id,
                    other_mirror=other.mirror,
                    other_folder=other_folder,
                ) from None
            if n == 0:
                raise ManifestError(f"entry {entry_id} is not being added (journal {journal_id})")
            self._map(conn, item.mirror, paths, entry_id)
            self._close_item(conn, journal_id, "done", None)

    def abort_add(self, journal_id: int, entry_id: int, error: str) -> None:
        """The add did not happen (refused, or never sent): forget the entry; the journal says why."""
        with self._write() as conn:
            self._open_item(conn, journal_id, "add", entry_id)
            state = conn.execute(select(EntryRow.state).where(EntryRow.id == entry_id)).scalar_one_or_none()
            if state not in (None, "adding"):
                raise ManifestError(f"entry {entry_id} is {state}, not being added; refusing to forget it")
            self._forget_entries(conn, [entry_id])
            self._close_item(conn, journal_id, "failed", error)

    def begin_update(self, mirror: str, entry_id: int, brief: str, tags: tuple[int, ...], class_ids: ClassIds) -> int:
        """Journal an update of a live entry's brief and labels; the entry changes at finish_update."""
        now = self._clock.time()
        with self._write() as conn:
            row = self._entry_row(conn, entry_id, mirror)
            if row.state != "live":
                raise ManifestError(f"entry {entry_id} is {row.state}; only a live entry can be updated")
            payload = {
                "brief": brief,
                "tags": list(tags),
                "class_ids": list(class_ids),
                "cont_sign": row.cont_sign,
                "old": {"brief": row.brief, "tags": list(_tags(row.tags)), "class_ids": [row.class_id1, row.class_id2]},
            }
            return self._intent(conn, "update", mirror, row.library, [entry_id], payload, now)

    def finish_update(self, journal_id: int, paths: Iterable[str] = ()) -> None:
        with self._write() as conn:
            item = self._open_item(conn, journal_id, "update")
            entry_id, p = item.entry_ids[0], item.payload
            conn.execute(
                update(EntryRow)
                .where(EntryRow.id == entry_id)
                .values(
                    brief=p["brief"],
                    tags=_tags_text(p["tags"]),
                    class_id1=p["class_ids"][0],
                    class_id2=p["class_ids"][1],
                    updated_at=self._clock.time(),
                )
            )
            self._map(conn, item.mirror, paths, entry_id)
            self._close_item(conn, journal_id, "done", None)

    def fail(self, journal_id: int, error: str) -> None:
        """An update or delete did not happen: the journal says why; the entries are left as they were
        (a delete's entries stay "deleting", so the next plan deletes them again). Adds use abort_add."""
        with self._write() as conn:
            item = self._open_item(conn, journal_id)
            if item.op == "add":
                raise ManifestError(f"journal {journal_id} is an add: use abort_add, which also forgets the entry")
            self._close_item(conn, journal_id, "failed", error)

    def begin_delete(self, mirror: str, entry_ids: Sequence[int]) -> int:
        """Mark the entries "deleting" and journal the delete (with their gallery ids), together."""
        ids = list(dict.fromkeys(entry_ids))
        if not ids:
            raise ManifestError("begin_delete needs at least one entry")
        now = self._clock.time()
        with self._write() as conn:
            rows = {r.id: r for r in conn.execute(select(_ENTRIES).where(EntryRow.id.in_(ids)))}
            missing = [i for i in ids if i not in rows]
            if missing:
                raise ManifestError(f"no entries {missing} in the manifest")
            strangers = [i for i in ids if rows[i].mirror != mirror]
            if strangers:
                raise ManifestError(f"entries {strangers} belong to another mirror than {mirror!r}")
            libraries = sorted({r.library for r in rows.values()})
            if len(libraries) > 1:
                raise ManifestError(f"entries {ids} span libraries {libraries}; delete them one library at a time")
            conn.execute(update(EntryRow).where(EntryRow.id.in_(ids)).values(state="deleting", updated_at=now))
            payload = {"cont_signs": [rows[i].cont_sign for i in ids]}
            return self._intent(conn, "delete", mirror, libraries[0], ids, payload, now)

    def finish_delete(self, journal_id: int) -> None:
        """The entries are gone from the gallery: forget them; files that mapped to them map to nothing."""
        with self._write() as conn:
            item = self._open_item(conn, journal_id, "delete")
            self._forget_entries(conn, list(item.entry_ids))
            self._close_item(conn, journal_id, "done", None)

    def deleted_lately(self, library: str, cont_sign: str, within_s: float) -> bool:
        """Did a delete of `cont_sign` in `library` finish within the last `within_s` seconds? From the
        journal's history (kept JOURNAL_KEEP_S), so any mirror's delete counts."""
        since = self._clock.time() - within_s
        needle = json.dumps(cont_sign)  # as it appears inside the payload's JSON list
        with self._read() as conn:
            rows = conn.execute(
                select(JournalRow.payload).where(
                    JournalRow.op == "delete",
                    JournalRow.state == "done",
                    JournalRow.library == library,
                    JournalRow.finished_at >= since,
                    cast(JournalRow.payload, Text).contains(needle, autoescape=True),
                )
            ).all()
        return any(cont_sign in (r.payload or {}).get("cont_signs", []) for r in rows)

    def open_journal(self) -> list[JournalItem]:
        """Intents whose outcome was never recorded (the process died), oldest first."""
        with self._read() as conn:
            rows = conn.execute(select(_JOURNAL).where(JournalRow.state == "intent").order_by(JournalRow.id))
            return [_journal_item(r) for r in rows]

    def journal_item(self, journal_id: int) -> JournalItem | None:
        with self._read() as conn:
            row = conn.execute(select(_JOURNAL).where(JournalRow.id == journal_id)).one_or_none()
            return _journal_item(row) if row is not None else None

    # ------------------------------------------------------------------ runs / status

    def start_run(self, mirror: str) -> int:
        """Record a run's start (lite.start_run: a run left "running" was killed, so "interrupted")."""
        with self._write() as conn:
            return lite.start_run(self._raw(conn), mirror, self._clock.time())

    def finish_run(self, run_id: int, status: str, counts: Mapping[str, int], error: str | None = None) -> None:
        """Record a run's end, and prune old history (finished journal rows, all but the last runs)."""
        with self._write() as conn:
            lite.finish_run(self._raw(conn), run_id, status, counts, error, self._clock.time())

    def last_run(self, mirror: str) -> RunInfo | None:
        with self._read() as conn:
            return lite.last_run(self._raw(conn), mirror)

    def mirror_state(self, mirror: str) -> MirrorState | None:
        with self._read() as conn:
            return lite.mirror_state(self._raw(conn), mirror)

    def set_mirror_state(
        self,
        mirror: str,
        folder: str,
        device: int,
        file_count: int,
        judged_as: str | None = None,
        settled: str | None = None,
        fsid: int | None = None,
    ) -> None:
        """Remember the folder after a complete run; last_run_id is this mirror's latest run."""
        now = self._clock.time()
        with self._write() as conn:
            last = conn.execute(select(func.max(RunRow.id)).where(RunRow.mirror == mirror)).scalar()
            values = {
                "folder": folder,
                "device": to_i64(device),
                "file_count": file_count,
                "last_run_id": last,
                "updated_at": now,
                "judged_as": judged_as,
                "settled": settled,
                "fsid": None if fsid is None else to_i64(fsid),
            }
            ins = sqlite_insert(_STATES).values(mirror=mirror, **values)
            conn.execute(ins.on_conflict_do_update(index_elements=[MirrorStateRow.mirror], set_=values))

    def setting(self, key: str) -> str | None:
        with self._read() as conn:
            return lite.setting(self._raw(conn), key)

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as conn:
            ins = sqlite_insert(_SETTINGS).values(key=key, value=value)
            conn.execute(ins.on_conflict_do_update(index_elements=[SettingRow.key], set_={"value": value}))

    def entry_count(self, *, acknowledged: bool = False) -> int:
        """Entries of every mirror (any state); acknowledged: only those a gallery has answered for."""
        with self._read() as conn:
            return lite.entry_count(self._raw(conn), acknowledged=acknowledged)

    def expect_gallery(self, identity: str) -> None:
        """The gallery this process talks to, for a manifest bound to none yet: it is recorded as the
        manifest's gallery (setting "gallery") in the same transaction as the first call it answers, so a
        run that never reached a gallery (wrong port, refused credentials) binds the state dir to nothing."""
        self._unbound_gallery = identity

    def unbind_gallery(self) -> None:
        with self._write() as conn:
            conn.execute(delete(SettingRow).where(SettingRow.key == "gallery"))

    def forget_gallery(self, new_gallery: str) -> int:
        """Forget every entry of every mirror (they live in a gallery this state dir no longer uses) and
        bind the state dir to `new_gallery`, in one transaction. Files stay; the next runs add them to
        the new gallery. Returns how many entries were forgotten."""
        with self._write() as conn:
            n = conn.execute(select(func.count()).select_from(EntryRow)).scalar() or 0
            conn.execute(update(FileRow).values(entry_id=None))
            conn.execute(delete(JournalRow).where(JournalRow.state == "intent"))
            conn.execute(delete(EntryRow))
            conn.execute(update(MirrorStateRow).values(settled=None))
            ins = sqlite_insert(_SETTINGS).values(key="gallery", value=new_gallery)
            conn.execute(ins.on_conflict_do_update(index_elements=[SettingRow.key], set_={"value": new_gallery}))
        return int(n)

    def rejected_files(self, mirror: str) -> list[tuple[str, str]]:
        """(path, reason) of the mirror's rejected files, by path."""
        with self._read() as conn:
            return [(p, why) for p, _, why in lite.files_with(self._raw(conn), mirror, ("rejected",))]

    def unsettle(self, mirror: str) -> None:
        """Forget that the mirror was in step: its next full run plans from scratch."""
        with self._write() as conn:
            conn.execute(
                update(MirrorStateRow)
                .where(MirrorStateRow.mirror == mirror, MirrorStateRow.settled.is_not(None))
                .values(settled=None)
            )

    def counts(self, mirror: str) -> dict[str, int]:
        """See lite.counts: synced / pending / rejected / error files, all files, live entries."""
        with self._read() as conn:
            return lite.counts(self._raw(conn), mirror)

    def take_freed(self) -> set[str]:
        """The mirrors with files freed since the last call: refused because an entry held their image,
        that entry now deleted (see _free_taken). A long-running caller (the daemon) runs them again now
        instead of at their next periodic full run. Cleared by the call."""
        with self._freed_lock:
            freed, self._freed = self._freed, set()
        return freed

    def mirror_names(self) -> list[str]:
        """Every mirror the manifest has any record of, sorted."""
        with self._read() as conn:
            return lite.mirror_names(self._raw(conn))

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _raw(conn: Connection) -> Any:
        """The sqlite3 connection under `conn`, inside its transaction: for the queries lite.py holds."""
        return conn.connection.driver_connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._transaction(self._engine) as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._transaction(self._writer) as conn:
            yield conn

    @contextmanager
    def _transaction(self, engine: Engine) -> Iterator[Connection]:
        if self._closed:
            raise ManifestError(f"the manifest {self.path} is closed")
        try:
            with engine.begin() as conn:
                yield conn
        except IntegrityError as e:
            raise ManifestError(f"manifest {self.path}: refused a change that breaks its rules: {_cause(e)}") from e
        except SQLAlchemyError as e:
            if "database or disk is full" in _cause(e):  # SQLITE_FULL: the transaction was rolled back
                raise disk_full(self.path.parent, f"writing the manifest {self.path.name}") from None
            raise ManifestError(f"manifest {self.path}: {_cause(e)}") from e

    def _intent(
        self,
        conn: Connection,
        op: JournalOp,
        mirror: str,
        library: str,
        entry_ids: list[int],
        payload: dict[str, Any],
        now: float,
    ) -> int:
        return _inserted_id(
            conn.execute(
                _INSERT_INTENT,
                {
                    "op": op,
                    "mirror": mirror,
                    "library": library,
                    "entry_ids": entry_ids,
                    "payload": payload,
                    "state": "intent",
                    "created_at": now,
                },
            )
        )

    def _open_item(
        self, conn: Connection, journal_id: int, op: JournalOp | None = None, entry_id: int | None = None
    ) -> JournalItem:
        row = conn.execute(_ITEM_BY_ID, {"journal_id": journal_id}).one_or_none()
        if row is None:
            raise ManifestError(f"no journal item {journal_id}")
        if row.state != "intent":
            raise ManifestError(f"journal item {journal_id} ({row.op}) is already {row.state}")
        if op is not None and row.op != op:
            raise ManifestError(f"journal item {journal_id} is an {row.op}, not an {op}")
        if entry_id is not None and entry_id not in row.entry_ids:
            raise ManifestError(f"journal item {journal_id} is about entries {row.entry_ids}, not {entry_id}")
        return _journal_item(row)

    def _close_item(self, conn: Connection, journal_id: int, state: JournalState, error: str | None) -> None:
        conn.execute(
            _CLOSE_ITEM, {"journal_id": journal_id, "new_state": state, "new_error": error, "now": self._clock.time()}
        )
        if state == "done" and self._unbound_gallery is not None:
            # The gallery answered: from now on the manifest's entries live there (see expect_gallery).
            conn.execute(
                sqlite_insert(_SETTINGS)
                .values(key="gallery", value=self._unbound_gallery)
                .on_conflict_do_nothing(index_elements=[SettingRow.key])
            )
            self._unbound_gallery = None

    def _entry_row(self, conn: Connection, entry_id: int, mirror: str) -> Row[Any]:
        row = conn.execute(_ENTRY_BY_ID, {"entry_id": entry_id}).one_or_none()
        if row is None:
            raise ManifestError(f"no entry {entry_id} in the manifest")
        if row.mirror != mirror:
            raise ManifestError(f"entry {entry_id} belongs to mirror {row.mirror!r}, not {mirror!r}")
        return row

    def _map(self, conn: Connection, mirror: str, paths: Iterable[str], entry_id: int | None) -> None:
        params = [{"m": mirror, "p": p, "new_entry": entry_id} for p in paths]
        if params:
            conn.execute(_MAP_FILE, params)

    def _forget_entries(self, conn: Connection, ids: list[int]) -> None:
        # Explicit, not only ON DELETE SET NULL: the file records must survive even if foreign keys were off.
        conn.execute(update(FileRow).where(FileRow.entry_id.in_(ids)).values(entry_id=None))
        cont_signs = [
            c for c in conn.execute(select(EntryRow.cont_sign).where(EntryRow.id.in_(ids))).scalars() if c is not None
        ]
        conn.execute(delete(EntryRow).where(EntryRow.id.in_(ids)))
        self._free_taken(conn, cont_signs)

    def _free_taken(self, conn: Connection, cont_signs: list[str]) -> None:
        """Files refused because these entries held their image are judged again at their mirror's next
        full run: their record is made untrusted (hashed_at_ns 0, so the scan reads them again) and the
        mirror's settled mark is dropped (so the no-op path does not skip that run)."""
        if not cont_signs:
            return
        waiting = FileRow.taken_by.in_(cont_signs)
        mirrors = set(conn.execute(select(FileRow.mirror).where(waiting).distinct()).scalars())
        if mirrors:
            conn.execute(
                update(FileRow).where(waiting).values(taken_by=None, hashed_at_ns=0, updated_at=self._clock.time())
            )
            conn.execute(
                update(MirrorStateRow)
                .where(MirrorStateRow.mirror.in_(mirrors), MirrorStateRow.settled.is_not(None))
                .values(settled=None)
            )
            with self._freed_lock:  # recorded before the commit: at worst one full run too many, never one too few
                self._freed |= mirrors


# ---------------------------------------------------------------------- conversions (pure)


def _file_rows(mirror: str, files: Iterable[ScannedFile], now: float) -> list[dict[str, Any]]:
    """_UPSERT_FILE's parameters for scanned files; ManifestError for a verdict the manifest has not."""
    rows = []
    for f in files:
        if f.verdict not in VERDICTS:
            raise ManifestError(f"file {f.path!r}: verdict {f.verdict!r} is not one of {', '.join(VERDICTS)}")
        rows.append(
            {
                "mirror": mirror,
                "path": f.path,
                "size": f.size,
                "mtime_ns": f.mtime_ns,
                "inode": to_i64(f.inode),
                "content_hash": f.content_hash,
                "verdict": f.verdict,
                "reason": f.reason,
                "hashed_at_ns": f.hashed_at_ns,
                "updated_at": now,
                "taken_by": None,  # a file scanned anew is judged anew
            }
        )
    return rows


def _inserted_id(result: CursorResult[Any]) -> int:
    """The primary key an INSERT of one row gave it."""
    key = result.inserted_primary_key
    assert key is not None, "an INSERT of one row has a primary key"
    return int(key[0])


def _tags_text(tags: Iterable[int]) -> str:
    return ",".join(str(int(t)) for t in tags)


def _tags(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t)


def _entry(row: Row[Any]) -> Entry:
    return Entry(
        row.id,
        row.mirror,
        row.library,
        row.cont_sign,
        row.content_hash,
        row.brief,
        _tags(row.tags),
        row.class_id1,
        row.class_id2,
        row.state,
    )


def _journal_item(row: Row[Any]) -> JournalItem:
    return JournalItem(
        row.id,
        row.op,
        row.mirror,
        row.library,
        tuple(row.entry_ids),
        dict(row.payload),
        row.state,
        row.error,
        dt(row.created_at),
        dt_or_none(row.finished_at),
    )


def _cause(e: SQLAlchemyError) -> str:
    """The database's own words (no SQL or parameters: those could be long, and are not for users)."""
    orig = getattr(e, "orig", None)
    return str(orig) if orig is not None else str(e).split("\n")[0]
