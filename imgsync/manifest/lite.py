"""The manifest through the standard library's sqlite3: what a command needs to answer at once.

Importing SQLAlchemy and Alembic costs more than a no-op reconcile of 20,000 files, so the answers
that need no ORM live here, as plain SQL on a sqlite3.Connection: `imgsync status`, the no-op check
of `imgsync reconcile` (settled marks, binding, open intents) and recording its run. The Store calls the
same functions on its own connection (Store._raw), so each query has one home.

A Connection given to these functions is configured by `configure` (WAL, synchronous=FULL, foreign
keys, busy timeout): the pragmas every connection to a manifest gets, from either side.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from imgsync.errors import ManifestError, disk_full
from imgsync.manifest.records import (
    SCHEMA_HEAD,
    MirrorState,
    RunInfo,
    decode_text,
    dt,
    dt_or_none,
    encode_text,
    from_i64,
)

#: How long a writer waits for another writer's transaction before giving up, in milliseconds.
BUSY_TIMEOUT_MS = 30_000
#: Finished journal rows are history only; keep them this long (seconds) for support, then prune.
JOURNAL_KEEP_S = 30 * 24 * 3600
#: Runs kept per mirror (older ones are pruned when a run finishes).
RUNS_KEPT = 200


def configure(con: sqlite3.Connection) -> None:
    """The pragmas of every manifest connection (see manifest/engine.py for why these)."""
    con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _ensure_wal(con)
    con.execute("PRAGMA synchronous = FULL")
    con.execute("PRAGMA foreign_keys = ON")


def _ensure_wal(con: sqlite3.Connection) -> None:
    """Switch the file to WAL (it stays so: the mode is stored in the file). Switching needs an exclusive
    lock and SQLite answers "database is locked" at once, without the busy handler, while another
    connection holds any lock — as when several processes open a new manifest together — so retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            if con.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() == "wal":
                return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("database is locked (cannot switch it to WAL)")
        time.sleep(0.01)


class LiteManifest:
    """An existing manifest opened with sqlite3 only. Use `current` before trusting any answer: a
    manifest at another schema revision is the Store's business (it upgrades or refuses it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ManifestError(f"no manifest at {self.path}")
        try:
            # isolation_level=None: no implicit BEGIN; transactions are spelled out (see `write`).
            self.con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            configure(self.con)
        except sqlite3.Error as e:
            raise ManifestError(f"cannot open the manifest {self.path}: {e}") from None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> LiteManifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def current(self) -> bool:
        """At this imgsync's schema revision?"""
        try:
            return revision(self.con) == SCHEMA_HEAD
        except sqlite3.Error:
            return False

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock up front, as the Store's writes do)."""
        try:
            self.con.execute("BEGIN IMMEDIATE")
            try:
                yield self.con
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if "database or disk is full" in str(e):
                raise disk_full(self.path.parent, f"writing the manifest {self.path.name}") from None
            raise ManifestError(f"manifest {self.path}: {e}") from None


@contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection that cannot write, create or migrate the file (doctor looks before it touches)."""
    con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield con
    finally:
        con.close()


def schema_revisions(con: sqlite3.Connection) -> tuple[tuple[str, ...], bool]:
    """(revisions stamped in the manifest, whether it has any other table than Alembic's)."""
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    revisions: tuple[str, ...] = ()
    if "alembic_version" in tables:
        revisions = tuple(str(r[0]) for r in con.execute("SELECT version_num FROM alembic_version"))
    return revisions, bool(tables - {"alembic_version"})


def binding(con: sqlite3.Connection) -> tuple[str | None, int]:
    """(the gallery the manifest's entries live in, how many entries a gallery acknowledged); (None, 0)
    for a manifest from before the binding was recorded."""
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"settings", "entries"} <= tables:
        return None, 0
    return setting(con, "gallery"), entry_count(con, acknowledged=True)


# --- reads ------------------------------------------------------------------------------------------


def revision(con: sqlite3.Connection) -> str | None:
    try:
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None  # no version table: empty, or not a manifest
    return row[0] if row else None


def setting(con: sqlite3.Connection, key: str) -> str | None:
    row = con.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def entry_count(con: sqlite3.Connection, *, acknowledged: bool = False) -> int:
    """Entries of every mirror (any state); acknowledged: only those a gallery answered for (an add that
    never got an answer has no cont_sign)."""
    where = " WHERE cont_sign IS NOT NULL" if acknowledged else ""
    return int(con.execute(f"SELECT count(*) FROM entries{where}").fetchone()[0])


def open_intents(con: sqlite3.Connection, mirror: str | None = None) -> int:
    if mirror is None:
        return int(con.execute("SELECT count(*) FROM journal WHERE state = 'intent'").fetchone()[0])
    return int(
        con.execute("SELECT count(*) FROM journal WHERE state = 'intent' AND mirror = ?", (mirror,)).fetchone()[0]
    )


def mirror_state(con: sqlite3.Connection, mirror: str) -> MirrorState | None:
    row = con.execute(
        "SELECT mirror, folder, device, file_count, last_run_id, updated_at, judged_as, settled, fsid "
        "FROM mirror_state WHERE mirror = ?",
        (mirror,),
    ).fetchone()
    if row is None:
        return None
    name, folder, device, count, last, updated, judged, settled, fsid = row
    return MirrorState(
        name,
        decode_text(folder) or "",
        from_i64(device),
        count,
        last,
        dt(updated),
        judged,
        settled,
        None if fsid is None else from_i64(fsid),
    )


def last_run(con: sqlite3.Connection, mirror: str) -> RunInfo | None:
    row = con.execute(
        "SELECT id, mirror, status, started_at, finished_at, counts, error FROM runs WHERE mirror = ? "
        "ORDER BY id DESC LIMIT 1",
        (mirror,),
    ).fetchone()
    if row is None:
        return None
    run_id, name, status, started, finished, counts, error = row
    return RunInfo(
        run_id, name, status, dt(started), dt_or_none(finished), json.loads(counts or "{}"), decode_text(error)
    )


def counts(con: sqlite3.Connection, mirror: str) -> dict[str, int]:
    """synced: valid files whose image is live in the gallery; pending: valid files not (yet) there, and
    files that were still changing; rejected; error (unreadable); plus files and live entries. Index
    lookups only (ix_files_mirror_verdict, ix_entries_mirror_state): a status of 100k files stays quick."""
    by_verdict = dict(
        con.execute("SELECT verdict, count(*) FROM files WHERE mirror = ? GROUP BY verdict", (mirror,)).fetchall()
    )
    ok_unmapped = con.execute(
        "SELECT count(*) FROM files WHERE mirror = ? AND verdict = 'ok' AND entry_id IS NULL", (mirror,)
    ).fetchone()[0]
    # Entries that are not live (being added or deleted) are few: count their ok files from their side.
    ok_not_live = con.execute(
        "SELECT count(*) FROM entries e JOIN files f ON f.entry_id = e.id "
        "WHERE e.mirror = ? AND e.state != 'live' AND f.verdict = 'ok'",
        (mirror,),
    ).fetchone()[0]
    entries = con.execute("SELECT count(*) FROM entries WHERE mirror = ? AND state = 'live'", (mirror,)).fetchone()[0]
    ok, unstable = by_verdict.get("ok", 0), by_verdict.get("unstable", 0)
    pending_ok = ok_unmapped + ok_not_live
    return {
        "synced": ok - pending_ok,
        "pending": pending_ok + unstable,
        "rejected": by_verdict.get("rejected", 0),
        "error": by_verdict.get("error", 0),
        "files": sum(by_verdict.values()),
        "entries": entries,
    }


def files_with(
    con: sqlite3.Connection, mirror: str, verdicts: Sequence[str], *, limit: int | None = None, offset: int = 0
) -> list[tuple[str, str, str]]:
    """(path, verdict, reason) of the mirror's files with these verdicts, by path; a page of them with
    limit/offset (a mirror of 100k files may hold thousands of rejected ones)."""
    marks = ",".join("?" * len(verdicts))
    # "+path": find the rows through ix_files_mirror_verdict and sort those, rather than walk every file
    # of the mirror in path order (the (mirror, path) index) looking for them.
    rows = con.execute(
        f"SELECT path, verdict, reason FROM files WHERE mirror = ? AND verdict IN ({marks}) ORDER BY +path "
        "LIMIT ? OFFSET ?",
        (mirror, *verdicts, -1 if limit is None else limit, offset),
    ).fetchall()
    return [(decode_text(p) or "", v, decode_text(r) or v) for p, v, r in rows]


def mirror_names(con: sqlite3.Connection) -> list[str]:
    """Every mirror the manifest has any record of, sorted."""
    names = {r[0] for r in con.execute("SELECT mirror FROM runs UNION SELECT mirror FROM mirror_state")}
    for table in ("files", "entries"):
        names.update(_distinct_mirrors(con, table))
    return sorted(names)


def holds_records(con: sqlite3.Connection, mirror: str) -> bool:
    """Whether any file or entry (in any state, open intents included) is filed under `mirror`."""
    return any(
        con.execute(f"SELECT 1 FROM {table} WHERE mirror = ? LIMIT 1", (mirror,)).fetchone() is not None
        for table in ("files", "entries")
    )


def _distinct_mirrors(con: sqlite3.Connection, table: str) -> list[str]:
    """The distinct values of an indexed `mirror` column by hopping from one to the next through the
    index (a loose index scan: one lookup per mirror, not a walk over 100k rows)."""
    q = (
        f"WITH RECURSIVE m(x) AS (SELECT min(mirror) FROM {table} UNION ALL "
        f"SELECT (SELECT min(mirror) FROM {table} WHERE mirror > x) FROM m WHERE x IS NOT NULL) "
        "SELECT x FROM m WHERE x IS NOT NULL"
    )
    return [r[0] for r in con.execute(q)]


def locate(con: sqlite3.Connection, library: str, cont_signs: Iterable[str]) -> dict[str, list[tuple[str, str, str]]]:
    """cont_sign → [(mirror, mirror's folder as last reconciled, relative path)] of the local files each of
    `library`'s entries stands for (how a search hit leads back to files). Unknown signs are absent."""
    signs = list(dict.fromkeys(cont_signs))
    out: dict[str, list[tuple[str, str, str]]] = {}
    for i in range(0, len(signs), 500):  # SQLite's bound-parameter limit
        chunk = signs[i : i + 500]
        rows = con.execute(
            "SELECT e.cont_sign, f.mirror, s.folder, f.path FROM entries e JOIN files f ON f.entry_id = e.id "
            "LEFT JOIN mirror_state s ON s.mirror = f.mirror "
            f"WHERE e.library = ? AND e.cont_sign IN ({','.join('?' * len(chunk))}) "
            "ORDER BY e.cont_sign, f.mirror, f.path",
            (library, *chunk),
        ).fetchall()
        for sign, mirror, folder, path in rows:
            out.setdefault(sign, []).append((mirror, decode_text(folder) or "", decode_text(path) or ""))
    return out


def library_entries(
    con: sqlite3.Connection, library: str, *, limit: int, offset: int = 0
) -> list[tuple[str, str, str, int | None, int | None, str]]:
    """(cont_sign, brief, tags "1,2", class_id1, class_id2, mirror) of `library`'s live entries, oldest
    first, a page of them: the manifest's view of a gallery that has no list call (the cloud)."""
    rows = con.execute(
        "SELECT cont_sign, brief, tags, class_id1, class_id2, mirror FROM entries "
        "WHERE library = ? AND state = 'live' ORDER BY id LIMIT ? OFFSET ?",
        (library, limit, offset),
    ).fetchall()
    return [(sign, decode_text(brief) or "", tags or "", c1, c2, mirror) for sign, brief, tags, c1, c2, mirror in rows]


def library_entry_count(con: sqlite3.Connection, library: str) -> int:
    return int(
        con.execute("SELECT count(*) FROM entries WHERE library = ? AND state = 'live'", (library,)).fetchone()[0]
    )


def owners(con: sqlite3.Connection, library: str, cont_signs: Iterable[str]) -> dict[str, str]:
    """cont_sign → the mirror whose entry it is (any state: an entry being added or deleted is a mirror's
    too). Signs no mirror here added are absent."""
    signs = list(dict.fromkeys(cont_signs))
    out: dict[str, str] = {}
    for i in range(0, len(signs), 500):  # SQLite's bound-parameter limit
        chunk = signs[i : i + 500]
        out.update(
            con.execute(
                "SELECT cont_sign, mirror FROM entries"
                f" WHERE library = ? AND cont_sign IN ({','.join('?' * len(chunk))})",
                (library, *chunk),
            ).fetchall()
        )
    return out


# --- runs -------------------------------------------------------------------------------------------


def start_run(con: sqlite3.Connection, mirror: str, now: float) -> int:
    """Record a run's start. A run of this mirror still "running" was killed (the lock is held by one
    process at a time), so it is marked "interrupted". Call inside a write transaction."""
    con.execute("UPDATE runs SET status = 'interrupted' WHERE mirror = ? AND status = 'running'", (mirror,))
    cur = con.execute(
        "INSERT INTO runs (mirror, started_at, status, counts) VALUES (?, ?, 'running', '{}')", (mirror, now)
    )
    return int(cur.lastrowid or 0)


def finish_run(
    con: sqlite3.Connection, run_id: int, status: str, counts: Mapping[str, int], error: str | None, now: float
) -> None:
    """Record a run's end, and prune old history (finished journal rows, all but the last runs). Call
    inside a write transaction."""
    row = con.execute("SELECT mirror FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise ManifestError(f"no run {run_id} in the manifest")
    con.execute(
        "UPDATE runs SET status = ?, counts = ?, error = ?, finished_at = ? WHERE id = ?",
        (status, json.dumps(dict(counts)), encode_text(error), now, run_id),
    )
    con.execute("DELETE FROM journal WHERE state != 'intent' AND finished_at < ?", (now - JOURNAL_KEEP_S,))
    con.execute(
        "DELETE FROM runs WHERE mirror = ? AND id NOT IN "
        "(SELECT id FROM runs WHERE mirror = ? ORDER BY id DESC LIMIT ?)",
        (row[0], row[0], RUNS_KEPT),
    )
