"""The local gallery's durable state: one SQLite file holding every library's entries.

One row per entry: library, cont_sign (unique per library), brief, up to two tags, product class
ids, the matcher's features as one blob, and `seq`, an AUTOINCREMENT key that records insertion
order (never reused, so it also breaks ranking ties the same way after a restart). Tags and class
ids use 0 for "none" (the valid range is 1..65535).

Two side tables, keyed by seq, hold what does not belong in the entries row: `extras`, a
matcher's variable-length data (keypoints; read only for the few rows a search verifies), and
`copies`, a reduced working copy of each added image (JPEG, ≤ images.WORK_SIDE px) from which the
engine re-extracts features when a library's matcher changes.

Schema versions (PRAGMA user_version): 0 = the first release (entries + libraries only); 2 = with
extras and copies. Opening a version-0 file migrates it in place (the side tables are added
empty: its entries have no copies). A file from a newer version is refused (StoreVersionError).

Concurrency: one connection shared by all threads, serialised by a lock (SQLite allows one writer
at a time anyway). WAL journal + synchronous=NORMAL make each single-row commit cheap while a crash
can lose at most the last commits, never corrupt the file. Only one process may open a data dir.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
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

SCHEMA_VERSION = 2


@dataclass(frozen=True, slots=True)
class StoredEntry:
    seq: int
    cont_sign: str
    brief: str
    tags: tuple[int, int]
    class_ids: tuple[int, int]
    features: bytes


@dataclass(frozen=True, slots=True)
class NewEntry:
    cont_sign: str
    brief: str
    tags: tuple[int, int]
    class_ids: tuple[int, int]
    features: bytes
    #: the matcher's variable-length data, if any
    extra: bytes | None = None
    #: the reduced working copy (JPEG), if any
    copy: bytes | None = None


class DuplicateEntry(Exception):
    """The library already holds this cont_sign."""


class StoreVersionError(RuntimeError):
    """The data dir was written by a newer imgsync than this one."""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            self._db.close()
            raise StoreVersionError(f"{self.path} has store schema {version}; this imgsync reads up to "
                                    f"{SCHEMA_VERSION}: upgrade imgsync or use another data dir")
        if version == SCHEMA_VERSION:
            return
        # 0 → 2 (a new file, or one from the first release): add the side tables, in one transaction.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in (_SCHEMA + _SCHEMA_V2).split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def matcher_of(self, library: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT matcher FROM libraries WHERE name = ?", (library,)).fetchone()
        return row[0] if row else None

    def set_matcher(self, library: str, matcher: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO libraries (name, matcher) VALUES (?, ?) "
                             "ON CONFLICT(name) DO UPDATE SET matcher = excluded.matcher", (library, matcher))

    def count(self, library: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM entries WHERE library = ?", (library,)).fetchone()[0])

    def insert(self, library: str, entry: NewEntry) -> int:
        """Store one entry and commit; its seq. DuplicateEntry if the cont_sign is already there."""
        return self.insert_many(library, [entry])[0]

    def insert_many(self, library: str, entries: Sequence[NewEntry]) -> list[int]:
        """Store entries in one transaction (all or none); their seqs, in order."""
        seqs: list[int] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for e in entries:
                    cur = self._db.execute(
                        "INSERT INTO entries (library, cont_sign, brief, tag1, tag2, class_id1, class_id2, features)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (library, e.cont_sign, e.brief, *e.tags, *e.class_ids, e.features))
                    seq = int(cur.lastrowid or 0)
                    seqs.append(seq)
                    if e.extra is not None:
                        self._db.execute("INSERT INTO extras (seq, data) VALUES (?, ?)", (seq, e.extra))
                    if e.copy is not None:
                        self._db.execute("INSERT INTO copies (seq, jpeg) VALUES (?, ?)", (seq, e.copy))
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as err:
                self._db.execute("ROLLBACK")
                raise DuplicateEntry(str(err)) from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return seqs

    def update(self, library: str, cont_sign: str, *, brief: str | None = None,
               tags: tuple[int, int] | None = None, class_ids: tuple[int, int] | None = None) -> bool:
        """Change the given fields; False if the entry does not exist."""
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
        if not sets:
            return self.contains(library, cont_sign)
        with self._lock:
            cur = self._db.execute(f"UPDATE entries SET {', '.join(sets)} WHERE library = ? AND cont_sign = ?",
                                   (*args, library, cont_sign))
        return cur.rowcount > 0

    def contains(self, library: str, cont_sign: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM entries WHERE library = ? AND cont_sign = ?",
                                    (library, cont_sign)).fetchone() is not None

    def delete(self, library: str, cont_signs: Iterable[str]) -> list[str]:
        """Delete in one transaction; the cont_signs that existed."""
        gone: list[str] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for s in dict.fromkeys(cont_signs):
                    row = self._db.execute("SELECT seq FROM entries WHERE library = ? AND cont_sign = ?",
                                           (library, s)).fetchone()
                    if row is None:
                        continue
                    for table in ("entries", "extras", "copies"):
                        self._db.execute(f"DELETE FROM {table} WHERE seq = ?", (row[0],))
                    gone.append(s)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return gone

    def scan(self, library: str, batch: int = 10_000) -> Iterator[list[StoredEntry]]:
        """Every entry of `library` in insertion order, in batches (for loading the index)."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, cont_sign, brief, tag1, tag2, class_id1, class_id2, features FROM entries"
                    " WHERE library = ? AND seq > ? ORDER BY seq LIMIT ?", (library, last, batch)).fetchall()
            if not rows:
                return
            yield [StoredEntry(r[0], r[1], r[2], (r[3], r[4]), (r[5], r[6]), r[7]) for r in rows]
            last = rows[-1][0]

    # --- variable-length data and working copies ------------------------------------------------

    def extras(self, seqs: Sequence[int]) -> dict[int, bytes]:
        """{seq: variable-length blob} for those of `seqs` that have one."""
        out: dict[int, bytes] = {}
        with self._lock:
            for i in range(0, len(seqs), 500):
                chunk = seqs[i:i + 500]
                marks = ",".join("?" * len(chunk))
                out.update(self._db.execute(f"SELECT seq, data FROM extras WHERE seq IN ({marks})", chunk))
        return out

    def count_without_copy(self, library: str) -> int:
        """Entries of `library` that have no working copy (added by the first release, or bulk-loaded)."""
        with self._lock:
            return int(self._db.execute(
                "SELECT count(*) FROM entries e WHERE e.library = ? AND NOT EXISTS "
                "(SELECT 1 FROM copies c WHERE c.seq = e.seq)", (library,)).fetchone()[0])

    def scan_copies(self, library: str, batch: int = 256) -> Iterator[list[tuple[int, bytes]]]:
        """(seq, working copy JPEG) of every entry of `library` that has one, in insertion order."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT e.seq, c.jpeg FROM entries e JOIN copies c ON c.seq = e.seq"
                    " WHERE e.library = ? AND e.seq > ? ORDER BY e.seq LIMIT ?", (library, last, batch)).fetchall()
            if not rows:
                return
            yield [(int(r[0]), r[1]) for r in rows]
            last = rows[-1][0]

    def replace_features(self, rows: Sequence[tuple[int, bytes, bytes | None]]) -> None:
        """Overwrite (seq, features, extra) of existing entries in one transaction (re-extraction)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for seq, feats, extra in rows:
                    self._db.execute("UPDATE entries SET features = ? WHERE seq = ?", (feats, seq))
                    self._db.execute("DELETE FROM extras WHERE seq = ?", (seq,))
                    if extra is not None:
                        self._db.execute("INSERT INTO extras (seq, data) VALUES (?, ?)", (seq, extra))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
