"""A read-only look at a local gallery's entries and their stored working copies (the web console's list).

The engine's own `entries()` needs the whole engine: every library's features loaded into numpy, the
matchers (OpenCV, onnxruntime) and the data dir's lock. Listing a page of entries needs none of that:
this reads the store's SQLite file (store.py owns its schema) through a read-only sqlite3 connection,
takes no lock and writes nothing, so it works while `imgsync watch`, a reconcile or `gallery serve`
holds the data dir, and a page of 60 entries costs one indexed query whatever the library's size.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

#: The store's file in a data dir: engine.DB_NAME (not imported: the engine imports numpy; a test
#: checks the two agree).
DB_NAME = "gallery.sqlite3"


@dataclass(frozen=True, slots=True)
class ListedEntry:
    cont_sign: str
    brief: str
    tags: tuple[int, ...]
    class_ids: tuple[int | None, int | None]
    #: the store keeps a reduced working copy of the image (entries added by the first release, or
    #: bulk-loaded, have none)
    has_copy: bool


class Listing:
    """The entries of a data dir's store, read-only. `exists` is False for a gallery never started."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / DB_NAME
        self._db: sqlite3.Connection | None = None

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def _con(self) -> sqlite3.Connection:
        if self._db is None:
            # mode=ro: never creates, migrates or writes the file; WAL lets it read beside the writer.
            self._db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0, check_same_thread=False
            )
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self, library: str) -> int:
        if not self.exists:
            return 0
        return int(self._con().execute("SELECT count(*) FROM entries WHERE library = ?", (library,)).fetchone()[0])

    def page(self, library: str, *, offset: int = 0, limit: int = 60) -> list[ListedEntry]:
        """Entries of `library` in insertion order, `limit` of them from `offset`."""
        if not self.exists:
            return []
        # The page's seqs first, from the (library, cont_sign) index alone: skipping `offset` rows then
        # never reads the wide rows (their features) nor looks for their copies.
        rows = (
            self._con()
            .execute(
                "SELECT e.cont_sign, e.brief, e.tag1, e.tag2, e.class_id1, e.class_id2, "
                "EXISTS (SELECT 1 FROM copies c WHERE c.seq = e.seq) FROM entries e WHERE e.seq IN "
                "(SELECT seq FROM entries WHERE library = ? ORDER BY seq LIMIT ? OFFSET ?) ORDER BY e.seq",
                (library, limit, offset),
            )
            .fetchall()
        )
        return [
            ListedEntry(sign, brief, tuple(t for t in (t1, t2) if t), (c1 or None, c2 or None), bool(copy))
            for sign, brief, t1, t2, c1, c2, copy in rows
        ]

    def copy_of(self, library: str, cont_sign: str) -> bytes | None:
        """The entry's stored working copy (JPEG, at most images.WORK_SIDE px), or None."""
        if not self.exists:
            return None
        row = (
            self._con()
            .execute(
                "SELECT c.jpeg FROM entries e JOIN copies c ON c.seq = e.seq WHERE e.library = ? AND e.cont_sign = ?",
                (library, cont_sign),
            )
            .fetchone()
        )
        return bytes(row[0]) if row else None
