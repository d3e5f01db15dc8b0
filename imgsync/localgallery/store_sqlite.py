"""The SQLite store: one file, `<data dir>/gallery.sqlite3`, served by one process at a time.

Tables: `entries` (seq: an AUTOINCREMENT key recording insertion order, never reused), `libraries`
(which matcher wrote a library's features), `extras` and `copies` keyed by seq (a matcher's
variable-length data, read only for the rows a search verifies; the reduced working copy each
entry's features can be re-extracted from), the change log (`changes`, `change_clock`; see
store.py) and `settings` (the token realm). Tags and class ids use 0 for "none" (the valid range is 1..65535).

Schema versions (PRAGMA user_version): 0 = the first release (entries + libraries); 2 = with extras
and copies; 3 = with the change log and settings. Opening an older file migrates it in place, in one transaction.
A file from a newer version is refused (StoreVersionError).

Concurrency: one connection shared by all threads, serialised by a lock (SQLite has one writer at a
time anyway). WAL + synchronous=NORMAL make each single-row commit cheap while a crash can lose at
most the last commits, never corrupt the file. An exclusive flock on `<data dir>/lock` keeps a
second process out: its in-memory indexes would miss this one's writes.

A full disk fails the write transaction; SQLite may already have rolled it back by the time the
error reaches us, so the rollback here only runs while a transaction is still open. The write
answers StoreFull, nothing is half-written, and reads go on working.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from imgsync.localgallery.store import (
    CHANGE_RETENTION,
    PRUNE_EVERY,
    Change,
    ChangesPruned,
    DuplicateEntry,
    NewEntry,
    Snapshot,
    Store,
    StoredEntry,
    StoreError,
    StoreFull,
    StoreVersionError,
    change_from_row,
    listed_entry,
    paged,
    warn_now_and_then,
)

DB_NAME = "gallery.sqlite3"
INDEX_DIR = "index"

_SCHEMA_V0 = """
CREATE TABLE IF NOT EXISTS libraries (
    name     TEXT PRIMARY KEY,
    matcher  TEXT NOT NULL           -- which matcher wrote the features of this library's entries
);
CREATE TABLE IF NOT EXISTS entries (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    library    TEXT    NOT NULL,
    cont_sign  TEXT    NOT NULL,
    brief      TEXT    NOT NULL,
    tag1       INTEGER NOT NULL DEFAULT 0,
    tag2       INTEGER NOT NULL DEFAULT 0,
    class_id1  INTEGER NOT NULL DEFAULT 0,
    class_id2  INTEGER NOT NULL DEFAULT 0,
    features   BLOB    NOT NULL,
    UNIQUE (library, cont_sign)
);
"""

_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS extras (
    seq   INTEGER PRIMARY KEY,       -- entries.seq
    data  BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS copies (
    seq   INTEGER PRIMARY KEY,       -- entries.seq
    jpeg  BLOB    NOT NULL
);
"""

_SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS changes (
    id          INTEGER PRIMARY KEY,  -- from change_clock: gap-free, in commit order
    library     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,     -- add / update / delete
    seq         INTEGER,              -- add: the entry
    cont_signs  TEXT    NOT NULL,     -- separated by semicolons
    brief       TEXT,                 -- update: new values (NULL = unchanged)
    tag1        INTEGER,
    tag2        INTEGER,
    class_id1   INTEGER,
    class_id2   INTEGER,
    at          REAL    NOT NULL      -- unix time, for pruning
);
CREATE TABLE IF NOT EXISTS change_clock (
    one             INTEGER PRIMARY KEY CHECK (one = 1),
    last            INTEGER NOT NULL,
    pruned_through  INTEGER NOT NULL
);
INSERT OR IGNORE INTO change_clock VALUES (1, 0, 0);
CREATE TABLE IF NOT EXISTS settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
INSERT OR IGNORE INTO settings VALUES ('token_realm', lower(hex(randomblob(16))));
"""

SCHEMA_VERSION = 3

_SQLITE_FULL = 13
_SQLITE_IOERR = 10


class DataDirInUseError(RuntimeError):
    """Another process serves this data dir (its in-memory indexes would diverge from ours)."""


class SqliteStore(Store):
    kind = "sqlite"
    shared = False

    def __init__(self, data_dir: Path, *, read_only: bool = False, change_retention: float = CHANGE_RETENTION) -> None:
        """read_only: for looking at a data dir another process serves (listing entries): takes no
        lock. Otherwise the data dir is this store's alone."""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        self.index_dir = data_dir / INDEX_DIR
        self._retention = change_retention
        self._dir_lock = None if read_only else _lock_data_dir(data_dir)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except BaseException:
            self._release()
            raise

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            self._db.close()
            raise StoreVersionError(
                f"{self.path} has store schema {version}; this imgsync reads up to "
                f"{SCHEMA_VERSION}: upgrade imgsync or use another data dir"
            )
        if version == SCHEMA_VERSION:
            return
        # 0 or 2 → 3 (a new file, or an older release's): add what is missing, in one transaction.
        with self._write():
            for stmt in (_SCHEMA_V0 + _SCHEMA_V2 + _SCHEMA_V3).split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._release()

    def _release(self) -> None:
        if self._dir_lock is not None:
            self._dir_lock.close()  # closing the file drops the flock
            self._dir_lock = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; errors translated (see the module doc)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as err:
                if self._db.in_transaction:  # a full disk may have rolled it back already
                    self._db.execute("ROLLBACK")
                if isinstance(err, sqlite3.OperationalError):
                    translated = _translated(err)
                    if translated is not err:
                        warn_now_and_then(f"write {self.path}", "local gallery %s: %s", self.path, err)
                    raise translated from err
                raise

    # --- matchers ------------------------------------------------------------------------------------

    def matcher_of(self, library: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT matcher FROM libraries WHERE name = ?", (library,)).fetchone()
        return row[0] if row else None

    def set_matcher(self, library: str, matcher: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO libraries (name, matcher) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET matcher = excluded.matcher",
                (library, matcher),
            )

    # --- writes ----------------------------------------------------------------------------------------

    def _next_ids(self, db: sqlite3.Connection, n: int) -> int:
        """Take n change ids (the clock row stays locked until commit); the first one. Every
        PRUNE_EVERY-th change also prunes the log."""
        last = int(db.execute("UPDATE change_clock SET last = last + ? RETURNING last", (n,)).fetchone()[0])
        first = last - n + 1
        if (first - 1) // PRUNE_EVERY != last // PRUNE_EVERY:
            cutoff = time.time() - self._retention
            row = db.execute("SELECT max(id) FROM changes WHERE at < ?", (cutoff,)).fetchone()
            if row[0] is not None:
                db.execute("DELETE FROM changes WHERE id <= ?", (row[0],))
                db.execute("UPDATE change_clock SET pruned_through = max(pruned_through, ?)", (row[0],))
        return first

    def insert_many(self, library: str, entries: Sequence[NewEntry]) -> list[Change]:
        changes: list[Change] = []
        try:
            with self._write() as db:
                first = self._next_ids(db, len(entries))
                now = time.time()
                for i, e in enumerate(entries):
                    cur = db.execute(
                        "INSERT INTO entries (library, cont_sign, brief, tag1, tag2, class_id1, class_id2, features)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (library, e.cont_sign, e.brief, *e.tags, *e.class_ids, e.features),
                    )
                    seq = int(cur.lastrowid or 0)
                    if e.extra is not None:
                        db.execute("INSERT INTO extras (seq, data) VALUES (?, ?)", (seq, e.extra))
                    if e.copy is not None:
                        db.execute("INSERT INTO copies (seq, jpeg) VALUES (?, ?)", (seq, e.copy))
                    db.execute(
                        "INSERT INTO changes (id, library, kind, seq, cont_signs, at) VALUES (?, ?, 'add', ?, ?, ?)",
                        (first + i, library, seq, e.cont_sign, now),
                    )
                    stored = StoredEntry(seq, e.cont_sign, e.brief, e.tags, e.class_ids, e.features)
                    changes.append(Change(first + i, library, "add", (e.cont_sign,), entry=stored))
        except sqlite3.IntegrityError as err:
            raise DuplicateEntry(str(err)) from None
        return changes

    def update(
        self,
        library: str,
        cont_sign: str,
        *,
        brief: str | None = None,
        tags: tuple[int, int] | None = None,
        class_ids: tuple[int, int] | None = None,
    ) -> Change | None:
        sets: list[str] = []
        args: list[object] = []
        if brief is not None:
            sets.append("brief = ?")
            args.append(brief)
        if tags is not None:
            sets.append("tag1 = ?, tag2 = ?")
            args.extend(tags)
        if class_ids is not None:
            sets.append("class_id1 = ?, class_id2 = ?")
            args.extend(class_ids)
        with self._write() as db:
            exists = db.execute(
                "SELECT 1 FROM entries WHERE library = ? AND cont_sign = ?", (library, cont_sign)
            ).fetchone()
            if exists is None:
                return None
            if sets:
                db.execute(
                    f"UPDATE entries SET {', '.join(sets)} WHERE library = ? AND cont_sign = ?",
                    (*args, library, cont_sign),
                )
            cid = self._next_ids(db, 1)
            t, c = tags or (None, None), class_ids or (None, None)
            db.execute(
                "INSERT INTO changes (id, library, kind, cont_signs, brief, tag1, tag2, class_id1, class_id2,"
                " at) VALUES (?, ?, 'update', ?, ?, ?, ?, ?, ?, ?)",
                (cid, library, cont_sign, brief, *t, *c, time.time()),
            )
        return Change(cid, library, "update", (cont_sign,), brief=brief, tags=tags, class_ids=class_ids)

    def delete(self, library: str, cont_signs: Iterable[str]) -> Change | None:
        gone: list[str] = []
        with self._write() as db:
            for s in dict.fromkeys(cont_signs):
                row = db.execute("SELECT seq FROM entries WHERE library = ? AND cont_sign = ?", (library, s)).fetchone()
                if row is None:
                    continue
                for table in ("entries", "extras", "copies"):
                    db.execute(f"DELETE FROM {table} WHERE seq = ?", (row[0],))
                gone.append(s)
            if not gone:
                return None
            cid = self._next_ids(db, 1)
            db.execute(
                "INSERT INTO changes (id, library, kind, cont_signs, at) VALUES (?, ?, 'delete', ?, ?)",
                (cid, library, ";".join(gone), time.time()),
            )
        return Change(cid, library, "delete", tuple(gone))

    # --- reads -----------------------------------------------------------------------------------------

    def count(self, library: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM entries WHERE library = ?", (library,)).fetchone()[0])

    def entries(self, library: str) -> list[dict[str, object]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT cont_sign, brief, tag1, tag2, class_id1, class_id2 FROM entries WHERE library = ? ORDER BY seq",
                (library,),
            ).fetchall()
        return [listed_entry(*r) for r in rows]

    def extras(self, seqs: Sequence[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        with self._lock:
            for i in range(0, len(seqs), 500):
                chunk = seqs[i : i + 500]
                marks = ",".join("?" * len(chunk))
                out.update(self._db.execute(f"SELECT seq, data FROM extras WHERE seq IN ({marks})", chunk))
        return out

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        # The engine loads before it serves and it is the only writer, so a plain read is consistent;
        # the lock is not held across the scan (a large library takes seconds to read).
        yield _SqliteSnapshot(self, self.last_change())

    def last_change(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT last FROM change_clock").fetchone()[0])

    def changes_since(self, after: int, limit: int = 1000) -> list[Change]:
        with self._lock:
            pruned = int(self._db.execute("SELECT pruned_through FROM change_clock").fetchone()[0])
            if after < pruned:
                raise ChangesPruned(f"changes up to {pruned} were pruned; asked for those after {after}")
            rows = self._db.execute(
                "SELECT c.id, c.library, c.kind, c.cont_signs, c.brief, c.tag1, c.tag2, c.class_id1, c.class_id2,"
                " e.seq, e.cont_sign, e.brief, e.tag1, e.tag2, e.class_id1, e.class_id2, e.features"
                " FROM changes c LEFT JOIN entries e ON c.kind = 'add' AND e.seq = c.seq"
                " WHERE c.id > ? ORDER BY c.id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [change_from_row(r) for r in rows]

    # --- re-extraction -----------------------------------------------------------------------------

    def count_without_copy(self, library: str) -> int:
        with self._lock:
            return int(
                self._db.execute(
                    "SELECT count(*) FROM entries e WHERE e.library = ? AND NOT EXISTS "
                    "(SELECT 1 FROM copies c WHERE c.seq = e.seq)",
                    (library,),
                ).fetchone()[0]
            )

    def scan_copies(self, library: str, batch: int = 256) -> Iterator[list[tuple[int, bytes]]]:
        return paged(
            lambda after: self._fetch(
                "SELECT e.seq, c.jpeg FROM entries e JOIN copies c ON c.seq = e.seq WHERE e.library = ? AND e.seq > ?"
                " ORDER BY e.seq LIMIT ?",
                (library, after, batch),
            )
        )

    def replace_features(self, rows: Sequence[tuple[int, bytes, bytes | None]]) -> None:
        with self._write() as db:
            for seq, feats, extra in rows:
                db.execute("UPDATE entries SET features = ? WHERE seq = ?", (feats, seq))
                db.execute("DELETE FROM extras WHERE seq = ?", (seq,))
                if extra is not None:
                    db.execute("INSERT INTO extras (seq, data) VALUES (?, ?)", (seq, extra))

    def _scan(self, library: str, batch: int) -> Iterator[list[StoredEntry]]:
        for rows in paged(
            lambda after: self._fetch(
                "SELECT seq, cont_sign, brief, tag1, tag2, class_id1, class_id2, features FROM entries"
                " WHERE library = ? AND seq > ? ORDER BY seq LIMIT ?",
                (library, after, batch),
            )
        ):
            yield [StoredEntry(r[0], r[1], r[2], (r[3], r[4]), (r[5], r[6]), r[7]) for r in rows]

    def _fetch(self, sql: str, args: Sequence[object]) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- the gallery's own key -------------------------------------------------------------------

    def token_realm(self) -> str:
        return str(self._fetch("SELECT value FROM settings WHERE key = 'token_realm'", ())[0][0])

    def load_or_create_key(self) -> tuple[tuple[str, str], bool]:
        from imgsync.localgallery.auth import load_or_create_key

        return load_or_create_key(self.data_dir)


class _SqliteSnapshot(Snapshot):
    def __init__(self, store: SqliteStore, last_change: int) -> None:
        self._store = store
        self.last_change = last_change

    def scan(self, library: str, batch: int = 10_000) -> Iterator[list[StoredEntry]]:
        return self._store._scan(library, batch)


def _translated(err: sqlite3.OperationalError) -> Exception:
    code = getattr(err, "sqlite_errorcode", 0) & 0xFF
    if code == _SQLITE_FULL:
        return StoreFull("the gallery's disk is full: nothing was stored (free some space and retry)")
    if code == _SQLITE_IOERR:
        return StoreError("the gallery cannot write to its disk (I/O error): nothing was stored")
    return err


def _lock_data_dir(data_dir: Path) -> IO[str]:
    """An exclusive flock on <data_dir>/lock, held while the store is open (released by the kernel if
    the process dies). Two engines on one data dir would each keep their own in-memory indexes and
    save them over each other's."""
    f = open(data_dir / "lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise DataDirInUseError(
            f"the gallery data dir {data_dir} is in use by another process" + (f" (pid {holder})" if holder else "")
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
    except OSError:
        pass  # the pid is only a courtesy for the message above (a full disk must not stop a start)
    return f
