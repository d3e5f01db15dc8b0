"""The local gallery's durable state: one storage interface, two implementations.

- SqliteStore (store_sqlite.py): one SQLite file in a data dir, served by one process at a time.
  The default: nothing to install or run.
- PostgresStore (store_pg.py): a PostgreSQL database that any number of `gallery serve` replicas
  share. Each replica keeps its search indexes in memory as a cache of the database.

What both hold, per library: entries (cont_sign unique per library, brief, up to two tags, product
class ids, the matcher's features as one blob, its variable-length data, a reduced working copy of
the image); which matcher wrote the features; and a change log.

The change log is how in-memory indexes stay current. Every write transaction (add, update, batch
delete) takes the next change id from a one-row counter that it holds locked until it commits, so
change ids are gap-free and commit in id order: whoever has applied every change up to N and reads
the changes after N misses nothing. An add's change carries the entry's seq (its position in
insertion order, which also breaks ranking ties), so seqs, too, grow in commit order. Old changes
are pruned; a reader that fell behind the pruning (ChangesPruned) reloads everything from a
snapshot instead.

Errors a store raises for its callers to answer: DuplicateEntry (the unique constraint refused the
cont_sign: this, not a look before the insert, decides a race), StoreUnavailable (the database
cannot be reached; nothing is known to have been written), StoreFull (out of disk space; nothing
was written), StoreVersionError (written by a newer imgsync).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

log = logging.getLogger("imgsync.localgallery")

#: Changes older than this are pruned from the log (a replica that was cut off longer reloads).
CHANGE_RETENTION = 3600.0
#: Pruning runs in the write transaction of every PRUNE_EVERY-th change.
PRUNE_EVERY = 1000


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


ChangeKind = Literal["add", "update", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, as the in-memory indexes apply it."""

    id: int
    library: str
    kind: ChangeKind
    cont_signs: tuple[str, ...]
    #: add: the entry as stored; None when it has been deleted since (a later change says so)
    entry: StoredEntry | None = None
    #: update: the new values; None = unchanged
    brief: str | None = None
    tags: tuple[int, int] | None = None
    class_ids: tuple[int, int] | None = None


class DuplicateEntry(Exception):
    """The library already holds this cont_sign."""


class StoreVersionError(RuntimeError):
    """The store was written by a newer imgsync than this one."""


class StoreError(Exception):
    """The store cannot do this now. str() is safe to show a client (no address, no password)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (down, restarting, network): nothing is known to be written,
    except for a commit that was cut off, which the client's retry settles (216681 on a re-add)."""


class StoreFull(StoreError):
    """Out of disk space: the write was not made."""


class ChangesPruned(Exception):
    """The changes after the asked-for id are no longer all in the log: reload from a snapshot."""


class Snapshot(ABC):
    """A consistent view for loading the in-memory indexes: every entry committed up to
    `last_change`, and none after it."""

    last_change: int

    @abstractmethod
    def scan(self, library: str, batch: int = 10_000) -> Iterator[list[StoredEntry]]:
        """Every entry of `library` in seq order, in batches."""


class Listener(ABC):
    """A subscription to the store's change notifications (stores that other processes write)."""

    @abstractmethod
    def wait(self, timeout: float) -> None:
        """Return when a change may have been committed, or after `timeout` seconds.
        StoreUnavailable when the connection is lost."""

    @abstractmethod
    def wake(self) -> None:
        """Make a wait() in another thread return now (best effort: when the store is down, wait()
        returns at its timeout)."""


class Store(ABC):
    #: "sqlite" or "postgresql" (what /health may tell anyone: no address)
    kind: ClassVar[str]
    #: Other processes write to this store too: the engine must follow its change log.
    shared: ClassVar[bool] = False
    #: Where matchers may keep index files (None: indexes are built in memory at each start).
    index_dir: Path | None = None

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for messages (never a password)."""

    # --- matchers ---------------------------------------------------------------------------------

    @abstractmethod
    def matcher_of(self, library: str) -> str | None: ...

    @abstractmethod
    def set_matcher(self, library: str, matcher: str) -> None: ...

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held while one process checks and re-extracts the libraries' features at startup."""
        yield

    # --- writes: each commits before it returns and answers with its change(s) -------------------

    def insert(self, library: str, entry: NewEntry) -> Change:
        """Store one entry; DuplicateEntry if the library holds its cont_sign already."""
        return self.insert_many(library, [entry])[0]

    @abstractmethod
    def insert_many(self, library: str, entries: Sequence[NewEntry]) -> list[Change]:
        """Store entries in one transaction (all or none); one add change each, in order."""

    @abstractmethod
    def update(
        self,
        library: str,
        cont_sign: str,
        *,
        brief: str | None = None,
        tags: tuple[int, int] | None = None,
        class_ids: tuple[int, int] | None = None,
    ) -> Change | None:
        """Change the given fields; None (and nothing written) if the entry does not exist."""

    @abstractmethod
    def delete(self, library: str, cont_signs: Iterable[str]) -> Change | None:
        """Delete in one transaction; the change lists the cont_signs that existed (None: none did)."""

    # --- reads -------------------------------------------------------------------------------------

    @abstractmethod
    def count(self, library: str) -> int: ...

    @abstractmethod
    def entries(self, library: str) -> list[dict[str, object]]:
        """A library's entries without their features, in insertion order (for listing)."""

    @abstractmethod
    def extras(self, seqs: Sequence[int]) -> dict[int, bytes]:
        """{seq: variable-length blob} for those of `seqs` that have one."""

    @abstractmethod
    def snapshot(self) -> contextlib.AbstractContextManager[Snapshot]: ...

    @abstractmethod
    def last_change(self) -> int:
        """The id of the newest committed change."""

    @abstractmethod
    def changes_since(self, after: int, limit: int = 1000) -> list[Change]:
        """Committed changes with id > after, oldest first, at most `limit`; ChangesPruned if some of
        them are gone from the log."""

    def ping(self) -> None:  # noqa: B027 - a local file always answers; shared stores override it
        """StoreUnavailable unless the store answers now."""

    def listen(self) -> contextlib.AbstractContextManager[Listener]:
        """Subscribe to change notifications (shared stores only)."""
        raise NotImplementedError(f"{type(self).__name__} is not shared: nothing to follow")

    # --- re-extraction when a library's matcher changes -------------------------------------------

    @abstractmethod
    def count_without_copy(self, library: str) -> int:
        """Entries of `library` that have no working copy (added by the first release, or bulk-loaded)."""

    @abstractmethod
    def scan_copies(self, library: str, batch: int = 256) -> Iterator[list[tuple[int, bytes]]]:
        """(seq, working copy JPEG) of every entry of `library` that has one, in insertion order."""

    @abstractmethod
    def replace_features(self, rows: Sequence[tuple[int, bytes, bytes | None]]) -> None:
        """Overwrite (seq, features, extra) of existing entries in one transaction."""

    # --- the gallery's own API key (when no --key is given), and its token realm --------------------

    @abstractmethod
    def token_realm(self) -> str:
        """A random value made with the store: access tokens are signed with it too, so a token is good
        on every replica of this gallery and on no other gallery, even one with the same key pair."""

    @abstractmethod
    def load_or_create_key(self) -> tuple[tuple[str, str], bool]:
        """The gallery's own key pair, created on first use: ((key, secret), created). Replicas
        starting together agree on one pair."""


def open_store(data_dir: Path | None = None, *, database: str | None = None, read_only: bool = False) -> Store:
    """The SQLite store of `data_dir`, or the PostgreSQL store at `database` (a postgresql:// URL
    or libpq conninfo). Exactly one of the two."""
    if (data_dir is None) == (database is None):
        raise ValueError("give either a data dir (SQLite) or a database (PostgreSQL), not both or neither")
    if database is not None:
        from imgsync.localgallery.store_pg import PostgresStore  # needs the `postgres` extra

        return PostgresStore(database)
    from imgsync.localgallery.store_sqlite import SqliteStore

    assert data_dir is not None
    return SqliteStore(data_dir, read_only=read_only)


def paged(fetch: Callable[[int], list[Any]]) -> Iterator[list[Any]]:
    """Batches of rows keyed by seq (their first column), from fetch(after_seq), until one is empty."""
    after = 0
    while rows := fetch(after):
        yield rows
        after = int(rows[-1][0])


_warned_at: dict[str, float] = {}
_warn_lock = threading.Lock()


def warn_now_and_then(what: str, message: str, *args: object, every: float = 10.0) -> None:
    """Log a warning about `what` at most once per `every` seconds: a database that is down for an
    hour must not write a line per request."""
    now = time.monotonic()
    with _warn_lock:
        if now - _warned_at.get(what, -every) < every:
            return
        _warned_at[what] = now
    log.warning(message, *args)


def listed_entry(cont_sign: str, brief: str, tag1: int, tag2: int, class_id1: int, class_id2: int) -> dict[str, object]:
    return {
        "cont_sign": cont_sign,
        "brief": brief,
        "tags": [t for t in (tag1, tag2) if t],
        "class_id1": class_id1 or None,
        "class_id2": class_id2 or None,
    }


def _pair(a: int | None, b: int | None) -> tuple[int, int] | None:
    return None if a is None else (int(a), int(b or 0))


def change_from_row(r: Sequence[Any]) -> Change:
    """A changes row joined with its add's entry → Change. Columns: id, library, kind, cont_signs,
    brief, tag1, tag2, class_id1, class_id2, then the entry's seq, cont_sign, brief, tag1, tag2,
    class_id1, class_id2, features (NULL when the change is not an add or its entry is gone)."""
    cid, library, kind, signs, brief, t1, t2, c1, c2 = r[:9]
    entry = None
    if kind == "add" and r[9] is not None:
        entry = StoredEntry(int(r[9]), r[10], r[11], (r[12], r[13]), (r[14], r[15]), bytes(r[16]))
    return Change(
        int(cid),
        library,
        kind,
        tuple(signs.split(";")),
        entry=entry,
        brief=brief,
        tags=_pair(t1, t2),
        class_ids=_pair(c1, c2),
    )
