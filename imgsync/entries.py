"""What a gallery holds, entry by entry, and who may change an entry: the API's view for the web console.

Two sources, one shape (EntryPage):
- the local gallery lists its own entries (localgallery/listing.py: its store, read-only, no engine),
  each with its stored working copy as a picture;
- the cloud has no list call, so its page is the manifest's view: the live entries the mirrors here
  added (the local files they stand for are the pictures).

Either way each entry says which mirror manages it, if any. A managed entry's brief and tags come from
its mirror's brief template and label rules, and its existence from the mirror's folder: editing or
deleting it in the gallery would silently diverge from the manifest and be undone (or the image re-added)
by a later reconcile. So only entries no mirror manages may be edited or deleted (ManagedEntryError
says what to do instead).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from imgsync.config import Config
from imgsync.errors import ImgsyncError, UsageError
from imgsync.libraries import LIBRARIES, MAX_BRIEF_BYTES, MAX_TAGS, TAG_RANGE


class ManagedEntryError(UsageError):
    """The entry belongs to a mirror: change its file or the mirror's rules, not the entry."""


@dataclass(frozen=True)
class GalleryEntry:
    cont_sign: str
    brief: str
    tags: tuple[int, ...]
    class_ids: tuple[int | None, int | None]
    #: the mirror whose entry this is (None: no mirror here added it: another tool, another machine)
    mirror: str | None
    #: the local files it stands for (as Hit.paths: the mirror's folder as last reconciled / the path)
    paths: tuple[Path, ...] = ()
    #: the local gallery keeps a reduced working copy of the image (Imgsync.entry_copy)
    has_copy: bool = False

    @property
    def managed(self) -> bool:
        return self.mirror is not None


@dataclass(frozen=True)
class EntryPage:
    library: str
    #: "gallery": the local gallery's own list; "manifest": the entries the mirrors added (the cloud)
    source: str
    total: int
    offset: int
    entries: list[GalleryEntry]


@dataclass(frozen=True)
class GalleryInfo:
    """Which gallery the config points at, fit for a page: never a key, a secret or a token."""

    #: "embedded" (the local gallery, started by imgsync or served by another imgsync) or "url"
    kind: str
    #: the endpoint URL without any user:password part; None for the embedded gallery
    endpoint: str | None
    #: "bound": the manifest's entries live in this gallery; "unbound": no run bound one yet (the next
    #: binds it); "other": they live in another gallery (reconcile refuses until --rebind)
    binding: str


def shown_endpoint(endpoint: str) -> str:
    """The endpoint as a page may show it: no user:password@, query or fragment."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def gallery_info(config: Config, bound_to: str | None, identity: str) -> GalleryInfo:
    g = config.gallery
    binding = "unbound" if bound_to is None else "bound" if bound_to == identity else "other"
    if g.is_local:
        return GalleryInfo("embedded", None, binding)
    return GalleryInfo("url", shown_endpoint(g.endpoint), binding)


def check_library(library: str) -> str:
    if library not in LIBRARIES:
        raise UsageError(f"library: unknown library {library!r} (known: {', '.join(LIBRARIES)})")
    return library


def local_page(data_dir: Path, library: str, offset: int, limit: int, manifest: sqlite3.Connection | None) -> EntryPage:
    """A page of the local gallery's own entries, each with its mirror and files from the manifest."""
    from imgsync.localgallery.listing import Listing

    try:
        with Listing(data_dir) as listing:
            total = listing.count(library)
            rows = listing.page(library, offset=offset, limit=limit)
    except sqlite3.Error as e:
        raise ImgsyncError(f"cannot read the local gallery's entries in {data_dir}: {e}") from None
    signs = [r.cont_sign for r in rows]
    mirrors, where = _owners_and_files(manifest, library, signs)
    entries = [
        GalleryEntry(
            r.cont_sign, r.brief, r.tags, r.class_ids, mirrors.get(r.cont_sign), where.get(r.cont_sign, ()), r.has_copy
        )
        for r in rows
    ]
    return EntryPage(library, "gallery", total, offset, entries)


def manifest_page(manifest: sqlite3.Connection | None, library: str, offset: int, limit: int) -> EntryPage:
    """The cloud's entries as the manifest knows them: those the mirrors here added, live."""
    from imgsync.manifest import lite

    if manifest is None:
        return EntryPage(library, "manifest", 0, offset, [])
    rows = lite.library_entries(manifest, library, limit=limit, offset=offset)
    _, where = _owners_and_files(manifest, library, [r[0] for r in rows])
    entries = [
        GalleryEntry(sign, brief, _tags(tags), (c1, c2), mirror, where.get(sign, ()))
        for sign, brief, tags, c1, c2, mirror in rows
    ]
    return EntryPage(library, "manifest", lite.library_entry_count(manifest, library), offset, entries)


def _owners_and_files(
    manifest: sqlite3.Connection | None, library: str, signs: Sequence[str]
) -> tuple[dict[str, str], dict[str, tuple[Path, ...]]]:
    if manifest is None or not signs:
        return {}, {}
    from imgsync.manifest import lite

    located = lite.locate(manifest, library, signs)
    where = {
        sign: tuple(Path(folder) / path if folder else Path(path) for _, folder, path in rows)
        for sign, rows in located.items()
    }
    return lite.owners(manifest, library, signs), where


def _tags(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def check_edit(library: str, brief: str | None, tags: Sequence[int] | None) -> dict[str, Any]:
    """The update call's fields for an edit of brief and/or tags, checked as the gallery would."""
    fields: dict[str, Any] = {}
    if brief is not None:
        if not brief.strip():
            raise UsageError("brief: must not be empty")
        if len(brief.encode("utf-8", "surrogatepass")) > MAX_BRIEF_BYTES:
            raise UsageError(f"brief: at most {MAX_BRIEF_BYTES} bytes of UTF-8")
        fields["brief"] = brief
    if tags is not None:
        if LIBRARIES[library].labels != "tags":
            raise UsageError(f"tags: the {library} library has class ids, not tags")
        lo, hi = TAG_RANGE
        if len(tags) > MAX_TAGS or not all(lo <= t <= hi for t in tags):
            raise UsageError(f"tags: at most {MAX_TAGS} integers in {lo}..{hi}")
        if not tags:
            # The gallery's update sets labels, it cannot clear them (README "How reconcile decides").
            raise UsageError(
                "tags: an update cannot clear an entry's tags; leave them, or delete the entry and add the image again"
            )
        fields["tags"] = tuple(tags)
    if not fields:
        raise UsageError("nothing to change: give a brief or tags")
    return fields


def refuse_managed(library: str, cont_sign: str, mirror: str | None, what: str) -> None:
    if mirror is not None:
        raise ManagedEntryError(
            f"entry {cont_sign} in {library} is mirror {mirror!r}'s: its brief and tags come from the mirror's "
            f"brief template and label rules and it exists because of a file in the mirror's folder, so the next "
            f"reconcile would undo this {what}; change the file or the mirror's config instead"
        )
