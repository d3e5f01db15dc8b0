"""The PostgreSQL store: one database that any number of `gallery serve` replicas share.

Needs the `postgres` extra (psycopg 3). The schema is owned by the Alembic migrations in
pg_migrations/ (shipped in the package); every replica upgrades the database at start, one at a
time under an advisory lock, and refuses a database from a newer imgsync.

Tables: `entries` (one row per entry: its features, the matcher's variable-length data and the
working copy in the same row; seq = the id of the change that added it), `libraries`, the change log
(`changes`, `change_clock`, see store.py), `server_key` (the gallery's own key pair when no --key is
given) and `settings` (the token realm). Each write is one statement that locks the change_clock row
before anything else, so writes from all replicas are serialised only for that statement and its
commit (the slow part of an add, feature extraction, happens before). Commits also send NOTIFY on
CHANNEL with the change id, which wakes the other replicas' followers.

Connections: a small pool, refilled on demand. A connection found dead (the server restarted, the
network broke) empties the pool, and the next request connects afresh: the gallery recovers at the
first request after the database is back, with no backoff to wait out. A statement that fails
before COMMIT is sent on a connection taken from the pool is retried once on a new connection (the
pooled one may have died while idle); a failure during COMMIT is not retried, since the commit may
have happened: the client's retry settles it (216681 on a re-add, 216680 on a re-delete).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from imgsync.localgallery.store import (
    CHANGE_RETENTION,
    PRUNE_EVERY,
    Change,
    ChangesPruned,
    DuplicateEntry,
    Listener,
    NewEntry,
    Snapshot,
    Store,
    StoredEntry,
    StoreError,
    StoreFull,
    StoreUnavailable,
    StoreVersionError,
    change_from_row,
    listed_entry,
    paged,
    warn_now_and_then,
)

log = logging.getLogger("imgsync.localgallery")

CHANNEL = "imgsync_gallery_changes"
VERSION_TABLE = "gallery_schema_version"
#: Advisory lock keys (pg_advisory_lock takes a bigint): schema upgrades, matcher re-extraction.
_MIGRATE_LOCK = int.from_bytes(hashlib.sha256(b"imgsync gallery migrate").digest()[:8], "big", signed=True)
_MATCHERS_LOCK = int.from_bytes(hashlib.sha256(b"imgsync gallery matchers").digest()[:8], "big", signed=True)
#: libpq settings a replica needs unless the URL says otherwise: fail a connect to a dead host within
#: seconds, and notice a peer that vanished without closing the connection.
_CONNECT_DEFAULTS = {
    "connect_timeout": "5",
    "application_name": "imgsync-gallery",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}

_T = TypeVar("_T")

_ENTRY_COLUMNS = "seq, cont_sign, brief, tag1, tag2, class_id1, class_id2, features"

# Each write is one statement (in a transaction of its own) that locks the change_clock row before it
# touches any entry: the lock is held only while the statement runs and commits, not across client round
# trips, and all writes take their locks in the same order (no deadlock between a delete and an insert of
# the same cont_sign). Reading `c` in the FROM (or USING) of the entries statement makes it run first.
_CLOCK = "UPDATE change_clock SET last = last + {n} RETURNING last - {n} AS base, pg_notify(%(channel)s, last::text)"
_INSERT = f"""
WITH c AS ({_CLOCK.format(n="%(n)s")}),
e AS (
    INSERT INTO entries (seq, library, cont_sign, brief, tag1, tag2, class_id1, class_id2, features, extra, copy)
    SELECT c.base + r.ord, %(library)s, r.cont_sign, r.brief, r.tag1, r.tag2, r.class_id1, r.class_id2,
           r.features, r.extra, r.copy
    FROM c, unnest(%(signs)s::text[], %(briefs)s::text[], %(t1)s::int[], %(t2)s::int[], %(c1)s::int[],
                   %(c2)s::int[], %(features)s::bytea[], %(extras)s::bytea[], %(copies)s::bytea[])
            WITH ORDINALITY AS r(cont_sign, brief, tag1, tag2, class_id1, class_id2, features, extra, copy, ord)
    RETURNING seq, cont_sign
)
INSERT INTO changes (id, library, kind, cont_signs) SELECT seq, %(library)s, 'add', cont_sign FROM e RETURNING id
"""
_UPDATE = f"""
WITH c AS ({_CLOCK.format(n="1")}),
u AS (
    UPDATE entries SET brief = coalesce(%(brief)s, brief), tag1 = coalesce(%(t1)s, tag1),
           tag2 = coalesce(%(t2)s, tag2), class_id1 = coalesce(%(c1)s, class_id1),
           class_id2 = coalesce(%(c2)s, class_id2)
    FROM c WHERE library = %(library)s AND cont_sign = %(sign)s
    RETURNING c.base + 1 AS id
)
INSERT INTO changes (id, library, kind, cont_signs, brief, tag1, tag2, class_id1, class_id2)
SELECT id, %(library)s, 'update', %(sign)s, %(brief)s, %(t1)s, %(t2)s, %(c1)s, %(c2)s FROM u RETURNING id
"""
_DELETE = f"""
WITH c AS ({_CLOCK.format(n="1")}),
d AS (DELETE FROM entries USING c WHERE library = %(library)s AND cont_sign = ANY(%(signs)s)
      RETURNING c.base + 1 AS id, cont_sign),
l AS (INSERT INTO changes (id, library, kind, cont_signs)
      SELECT min(id), %(library)s, 'delete', string_agg(cont_sign, ';') FROM d HAVING count(*) > 0)
SELECT id, cont_sign FROM d
"""
_PRUNE = """
WITH gone AS (DELETE FROM changes WHERE id <= (SELECT max(id) FROM changes WHERE at < now() - %s) RETURNING id)
UPDATE change_clock SET pruned_through = greatest(pruned_through, (SELECT coalesce(max(id), 0) FROM gone))
"""


def describe_database(database: str) -> str:
    """host:port/dbname (user) of a URL or conninfo, without the password, for messages."""
    try:
        d = conninfo_to_dict(database)
    except psycopg.ProgrammingError:
        return "PostgreSQL (unparsable connection string)"
    host = d.get("host") or d.get("hostaddr") or "local socket"
    port = f":{d['port']}" if d.get("port") else ""
    user = f" as {d['user']}" if d.get("user") else ""
    return f"PostgreSQL {host}{port}/{d.get('dbname') or '(default database)'}{user}"


class PostgresStore(Store):
    kind = "postgresql"
    shared = True
    index_dir = None  # replicas are stateless: indexes are built from the database at start

    def __init__(
        self,
        database: str,
        *,
        pool_size: int = 8,
        change_retention: float = CHANGE_RETENTION,
        migrate_schema: bool = True,
    ) -> None:
        try:
            params = {**_CONNECT_DEFAULTS, **conninfo_to_dict(database)}
        except psycopg.ProgrammingError as e:
            raise ValueError(f"not a PostgreSQL connection string: {str(e).splitlines()[0]}") from None
        self._conninfo = make_conninfo("", **params)
        self._where = describe_database(database)
        self._retention = change_retention
        self._pool = _Pool(self._conninfo, pool_size, self._where)
        if migrate_schema:
            migrate(self._conninfo, self._where)
        else:
            check_schema(self._conninfo, self._where)

    def describe(self) -> str:
        return self._where

    def close(self) -> None:
        self._pool.close()

    # --- running statements ------------------------------------------------------------------------

    def _read(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        return self._pool.run(fn, write=False)

    def _write(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """fn runs in one transaction (committed when it returns, rolled back when it raises)."""
        return self._pool.run(fn, write=True)

    def _prune_if_due(self, first: int, last: int) -> None:
        """Every PRUNE_EVERY-th change, drop the changes older than the retention (a statement of its
        own after the write: it need not be atomic with it)."""
        if (first - 1) // PRUNE_EVERY == last // PRUNE_EVERY:
            return
        with contextlib.suppress(StoreError):
            self._read(lambda c: c.execute(_PRUNE, (timedelta(seconds=self._retention),)))

    # --- matchers ------------------------------------------------------------------------------------

    def matcher_of(self, library: str) -> str | None:
        row = self._read(lambda c: c.execute("SELECT matcher FROM libraries WHERE name = %s", (library,)).fetchone())
        return row[0] if row else None

    def set_matcher(self, library: str, matcher: str) -> None:
        self._write(
            lambda c: c.execute(
                "INSERT INTO libraries (name, matcher) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET matcher = excluded.matcher",
                (library, matcher),
            )
        )

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """A session advisory lock on a connection of its own: one replica at a time checks and
        re-extracts the libraries' features."""
        with _connect(self._conninfo, self._where) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MATCHERS_LOCK,))
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_MATCHERS_LOCK,))

    # --- writes ----------------------------------------------------------------------------------------

    def insert_many(self, library: str, entries: Sequence[NewEntry]) -> list[Change]:
        args = {
            "n": len(entries),
            "channel": CHANNEL,
            "library": library,
            "signs": [e.cont_sign for e in entries],
            "briefs": [e.brief for e in entries],
            "t1": [e.tags[0] for e in entries],
            "t2": [e.tags[1] for e in entries],
            "c1": [e.class_ids[0] for e in entries],
            "c2": [e.class_ids[1] for e in entries],
            "features": [e.features for e in entries],
            "extras": [e.extra for e in entries],
            "copies": [e.copy for e in entries],
        }
        try:
            ids = self._write(lambda c: sorted(int(r[0]) for r in c.execute(_INSERT, args).fetchall()))
        except pg_errors.UniqueViolation as err:
            raise DuplicateEntry(str(err).splitlines()[0]) from None
        assert len(ids) == len(entries), "an insert lost rows"
        self._prune_if_due(ids[0], ids[-1])
        return [
            Change(
                i,
                library,
                "add",
                (e.cont_sign,),
                entry=StoredEntry(i, e.cont_sign, e.brief, e.tags, e.class_ids, e.features),
            )
            for i, e in zip(ids, entries, strict=True)
        ]

    def update(
        self,
        library: str,
        cont_sign: str,
        *,
        brief: str | None = None,
        tags: tuple[int, int] | None = None,
        class_ids: tuple[int, int] | None = None,
    ) -> Change | None:
        t, c = tags or (None, None), class_ids or (None, None)

        def run(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                _UPDATE,
                {
                    "channel": CHANNEL,
                    "library": library,
                    "sign": cont_sign,
                    "brief": brief,
                    "t1": t[0],
                    "t2": t[1],
                    "c1": c[0],
                    "c2": c[1],
                },
            ).fetchone()
            if row is None:
                raise _NothingToDo  # no such entry: roll the change id back
            return int(row[0])

        try:
            cid = self._write(run)
        except _NothingToDo:
            return None
        self._prune_if_due(cid, cid)
        return Change(cid, library, "update", (cont_sign,), brief=brief, tags=tags, class_ids=class_ids)

    def delete(self, library: str, cont_signs: Iterable[str]) -> Change | None:
        wanted = list(dict.fromkeys(cont_signs))

        def run(conn: psycopg.Connection[Any]) -> tuple[int, set[str]]:
            rows = conn.execute(_DELETE, {"channel": CHANNEL, "library": library, "signs": wanted}).fetchall()
            if not rows:
                raise _NothingToDo
            return int(rows[0][0]), {r[1] for r in rows}

        try:
            cid, found = self._write(run)
        except _NothingToDo:
            return None
        self._prune_if_due(cid, cid)
        return Change(cid, library, "delete", tuple(s for s in wanted if s in found))

    # --- reads -----------------------------------------------------------------------------------------

    def count(self, library: str) -> int:
        row = self._read(lambda c: c.execute("SELECT count(*) FROM entries WHERE library = %s", (library,)).fetchone())
        return int(row[0]) if row else 0

    def entries(self, library: str) -> list[dict[str, object]]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT cont_sign, brief, tag1, tag2, class_id1, class_id2 FROM entries"
                " WHERE library = %s ORDER BY seq",
                (library,),
            ).fetchall()
        )
        return [listed_entry(*r) for r in rows]

    def extras(self, seqs: Sequence[int]) -> dict[int, bytes]:
        if not seqs:
            return {}

        def run(conn: psycopg.Connection[Any]) -> dict[int, bytes]:
            with conn.cursor(binary=True) as cur:
                cur.execute("SELECT seq, extra FROM entries WHERE seq = ANY(%s) AND extra IS NOT NULL", (list(seqs),))
                return {int(r[0]): bytes(r[1]) for r in cur}

        return self._read(run)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """One REPEATABLE READ transaction on a connection of its own: the clock and every entry as of
        one instant, however long the scan takes and whatever the other replicas write meanwhile."""
        with _connect(self._conninfo, self._where) as conn:
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    row = conn.execute("SELECT last FROM change_clock").fetchone()
                    assert row is not None
                    yield _PgSnapshot(conn, int(row[0]))
            except psycopg.OperationalError as e:
                raise StoreUnavailable(_unreachable(self._where, e)) from e

    def last_change(self) -> int:
        row = self._read(lambda c: c.execute("SELECT last FROM change_clock").fetchone())
        assert row is not None
        return int(row[0])

    def changes_since(self, after: int, limit: int = 1000) -> list[Change]:
        def run(conn: psycopg.Connection[Any]) -> list[Change]:
            with conn.cursor(binary=True) as cur:
                cur.execute("SELECT pruned_through FROM change_clock")
                row = cur.fetchone()
                assert row is not None
                if after < int(row[0]):
                    raise ChangesPruned(f"changes up to {row[0]} were pruned; asked for those after {after}")
                cur.execute(
                    "SELECT c.id, c.library, c.kind, c.cont_signs, c.brief, c.tag1, c.tag2, c.class_id1, c.class_id2,"
                    f" e.{_ENTRY_COLUMNS.replace(', ', ', e.')}"
                    " FROM changes c LEFT JOIN entries e ON c.kind = 'add' AND e.seq = c.id"
                    " WHERE c.id > %s ORDER BY c.id LIMIT %s",
                    (after, limit),
                )
                return [change_from_row(r) for r in cur]

        return self._read(run)

    def ping(self) -> None:
        self._read(lambda c: c.execute("SELECT 1"))

    @contextlib.contextmanager
    def listen(self) -> Iterator[Listener]:
        private = f"imgsync_wake_{secrets.token_hex(6)}"  # wake() notifies this listener only

        def wake() -> None:
            with contextlib.suppress(StoreError):
                self._read(lambda c: c.execute("SELECT pg_notify(%s, '')", (private,)))

        try:
            with _connect(self._conninfo, self._where) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                conn.execute(f"LISTEN {private}")
                yield _PgListener(conn, self._where, wake)
        except psycopg.OperationalError as e:
            raise StoreUnavailable(_unreachable(self._where, e)) from e

    # --- re-extraction -----------------------------------------------------------------------------

    def count_without_copy(self, library: str) -> int:
        row = self._read(
            lambda c: c.execute(
                "SELECT count(*) FROM entries WHERE library = %s AND copy IS NULL", (library,)
            ).fetchone()
        )
        return int(row[0]) if row else 0

    def scan_copies(self, library: str, batch: int = 256) -> Iterator[list[tuple[int, bytes]]]:
        def fetch(after: int) -> list[tuple[int, bytes]]:
            def run(conn: psycopg.Connection[Any]) -> list[tuple[int, bytes]]:
                with conn.cursor(binary=True) as cur:
                    cur.execute(
                        "SELECT seq, copy FROM entries WHERE library = %s AND seq > %s AND copy IS NOT NULL"
                        " ORDER BY seq LIMIT %s",
                        (library, after, batch),
                    )
                    return [(int(r[0]), bytes(r[1])) for r in cur]

            return self._read(run)

        return paged(fetch)

    def replace_features(self, rows: Sequence[tuple[int, bytes, bytes | None]]) -> None:
        def run(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE entries SET features = %b, extra = %b WHERE seq = %s",
                    [(feats, extra, seq) for seq, feats, extra in rows],
                )

        self._write(run)

    # --- the gallery's own key -------------------------------------------------------------------

    def token_realm(self) -> str:
        row = self._read(lambda c: c.execute("SELECT value FROM settings WHERE key = 'token_realm'").fetchone())
        assert row is not None, "the token realm is missing: the schema is damaged"
        return str(row[0])

    def load_or_create_key(self) -> tuple[tuple[str, str], bool]:
        from imgsync.localgallery.auth import new_key

        candidate = new_key()

        def run(conn: psycopg.Connection[Any]) -> tuple[tuple[str, str], bool]:
            inserted = conn.execute(
                "INSERT INTO server_key (one, api_key, secret_key) VALUES (true, %s, %s) ON CONFLICT (one) DO NOTHING",
                candidate,
            ).rowcount
            row = conn.execute("SELECT api_key, secret_key FROM server_key").fetchone()
            assert row is not None
            return (str(row[0]), str(row[1])), bool(inserted)

        return self._write(run)


class _NothingToDo(Exception):
    """Rolls back a write that found nothing to change (no change id is spent)."""


class _PgSnapshot(Snapshot):
    def __init__(self, conn: psycopg.Connection[Any], last_change: int) -> None:
        self._conn = conn
        self.last_change = last_change

    def scan(self, library: str, batch: int = 10_000) -> Iterator[list[StoredEntry]]:
        with self._conn.cursor(name="gallery_scan", binary=True) as cur:  # server-side: streams
            cur.itersize = batch
            cur.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE library = %s ORDER BY seq", (library,))
            while rows := cur.fetchmany(batch):
                yield [StoredEntry(int(r[0]), r[1], r[2], (r[3], r[4]), (r[5], r[6]), bytes(r[7])) for r in rows]


class _PgListener(Listener):
    def __init__(self, conn: psycopg.Connection[Any], where: str, wake: Callable[[], None]) -> None:
        self._conn = conn
        self._where = where
        self._wake = wake

    def wait(self, timeout: float) -> None:
        try:
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                pass
            self._conn.execute("SELECT 1")  # a dead connection raises here even when nothing was notified
        except psycopg.OperationalError as e:
            raise StoreUnavailable(_unreachable(self._where, e)) from e

    def wake(self) -> None:
        self._wake()


# --- connections -------------------------------------------------------------------------------------


def _unreachable(where: str, err: BaseException) -> str:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    warn_now_and_then("unreachable " + where, "gallery database %s unreachable: %s", where, detail)
    return "the gallery's database is unreachable; retry later"


@contextlib.contextmanager
def _connect(conninfo: str, where: str) -> Iterator[psycopg.Connection[Any]]:
    try:
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as e:
        raise StoreUnavailable(_unreachable(where, e)) from e
    with conn:
        yield conn


class _Pool:
    """Idle autocommit connections, handed out one per call and refilled on demand (see the module doc)."""

    def __init__(self, conninfo: str, size: int, where: str) -> None:
        self._conninfo = conninfo
        self._size = size
        self._where = where
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> tuple[psycopg.Connection[Any], bool]:
        """A connection and whether it came from the idle list (and so may have died meanwhile)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        try:
            return psycopg.connect(self._conninfo, autocommit=True), False
        except psycopg.OperationalError as e:
            raise StoreUnavailable(_unreachable(self._where, e)) from e

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        ok = not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if ok and not self._closed and len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def _drop_idle(self) -> None:
        """One dead connection means the server went away: the idle ones are dead too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def run(self, fn: Callable[[psycopg.Connection[Any]], _T], *, write: bool) -> _T:
        for attempt in (1, 2):
            conn, pooled = self._take()
            committing = False
            try:
                if write:
                    with conn.transaction():
                        result = fn(conn)
                        committing = True
                else:
                    result = fn(conn)
            except pg_errors.DiskFull as e:
                self._give_back(conn)
                warn_now_and_then("full " + self._where, "gallery database %s: %s", self._where, e)
                raise StoreFull("the gallery's database is out of disk space: nothing was stored") from e
            except psycopg.OperationalError as e:
                if not conn.broken:  # the statement failed, the connection is fine (a timeout, say)
                    self._give_back(conn)
                    raise
                conn.close()
                self._drop_idle()
                if pooled and not committing and attempt == 1:
                    continue  # a connection that died while idle: once more on a fresh one
                raise StoreUnavailable(_unreachable(self._where, e)) from e
            except pg_errors.ReadOnlySqlTransaction as e:
                self._give_back(conn)
                raise StoreError(
                    "the gallery's database is read-only (a standby?): point the gallery at the primary"
                ) from e
            except BaseException:
                self._give_back(conn)
                raise
            self._give_back(conn)
            return result
        raise AssertionError("unreachable")


# --- schema ------------------------------------------------------------------------------------------


def _alembic_config():  # -> alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    # ConfigParser interpolates '%': escape it so any install path works.
    cfg.set_main_option("script_location", str(Path(__file__).parent / "pg_migrations").replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_table", VERSION_TABLE)
    return cfg


def _sa_engine(conninfo: str):  # -> sqlalchemy.Engine over our own psycopg connections
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    return sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo), poolclass=NullPool)


def migrate(conninfo: str, where: str) -> None:
    """Bring the database's gallery schema to this imgsync's head (a no-op when it is there), under an
    advisory lock so that replicas starting together take turns. StoreVersionError for a newer one."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = _alembic_config()
    script = ScriptDirectory.from_config(cfg)
    engine = _sa_engine(conninfo)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})
            current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_heads()
            _check_known(script, current, where)
            if current != (script.get_current_head(),):
                log.info(
                    "gallery database %s: upgrading schema from %s to %s",
                    where,
                    current[0] if current else "empty",
                    script.get_current_head(),
                )
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
    except sa.exc.OperationalError as e:
        raise StoreUnavailable(_unreachable(where, e.orig or e)) from None
    finally:
        engine.dispose()


def check_schema(conninfo: str, where: str) -> None:
    """StoreVersionError unless the database's gallery schema is exactly this imgsync's head."""
    with _connect(conninfo, where) as conn:
        try:
            row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
        except pg_errors.UndefinedTable:
            row = None
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    current = (row[0],) if row else ()
    _check_known(script, current, where)
    if current != (script.get_current_head(),):
        raise StoreVersionError(
            f"{where} holds gallery schema {current[0] if current else 'none'}; this imgsync "
            f"needs {script.get_current_head()}: start a gallery server on it to upgrade it"
        )


def _check_known(script: Any, current: tuple[str, ...], where: str) -> None:
    from alembic.util import CommandError

    for rev in current:
        try:
            known = script.get_revision(rev) is not None
        except CommandError:
            known = False
        if not known:
            raise StoreVersionError(
                f"{where} has gallery schema revision {rev!r}, which this imgsync does not know (its newest is "
                f"{script.get_current_head()!r}): it was written by a newer imgsync. Upgrade imgsync; the "
                "database was left untouched"
            )
