"""The console's pages and calls: each a function of (console, request) that asks the API and renders.

Pages (Jinja2 templates, rendered here): mirrors `/`, a mirror's rejected or pending files `/mirror`,
search by image `/search`, a library's entries `/gallery`. Calls the pages' script makes (JSON):
`/api/status`, `/api/search`, `/api/sync`, `/api/jobs`, `/api/entry/edit`, `/api/entry/delete`.
Pictures: `/thumb/file` (a file inside a mirror's folder) and `/thumb/entry` (the local gallery's working
copy of an entry).

Nothing secret reaches a page: the gallery is shown as GalleryInfo (an endpoint without credentials),
errors are the API's (which never carry keys), and the console's own token stays in its HttpOnly cookie.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from imgsync.console.app import Console, Handler, HttpError, Request, Response, json_response, static_file
from imgsync.console.pages import render, shown, when
from imgsync.console.thumbs import PathRefused, entry_key, file_key, make_thumbnail, open_in_folder
from imgsync.errors import UsageError
from imgsync.libraries import LIBRARIES, MAX_RESULTS

if TYPE_CHECKING:
    from imgsync.api import Imgsync
    from imgsync.config import MirrorConfig

#: Files per page of a mirror's rejected / pending list, entries per page of a library.
FILES_PER_PAGE = 50
ENTRIES_PER_PAGE = 60


# --------------------------------------------------------------------------- rendering


def page(template: str, **context: Any) -> Response:
    return Response(render(template, **context).encode("utf-8"))


def file_thumb_url(mirror: str, path: str) -> str:
    # The path's bytes, percent-encoded: any file name survives the round trip (Request.query).
    return f"/thumb/file?mirror={quote(mirror, safe='')}&path={quote(os.fsencode(path), safe='')}"


def entry_thumb_url(library: str, cont_sign: str) -> str:
    return f"/thumb/entry?{urlencode({'library': library, 'cont_sign': cont_sign})}"


# --------------------------------------------------------------------------- mirrors


def mirrors_page(console: Console, request: Request) -> Response:
    from imgsync.render import daemon_lines

    sync = console.opener()
    status = sync.status(limit=0)
    daemon = status.daemon if status.daemon and status.daemon.get("running") else None
    jobs = {name: job.as_json() for name, job in console.jobs.latest().items()}
    mirrors = [_mirror_view(m, daemon, jobs.get(m.name)) for m in status.mirrors]
    return page(
        "mirrors.html",
        active="mirrors",
        mirrors=mirrors,
        gallery=sync.gallery_info(),
        daemon_lines=daemon_lines(status.daemon),
        daemon_running=daemon is not None,
        in_daemon=console.in_daemon,
        state_dir=shown(status.state_dir),
    )


def status_json(console: Console, request: Request) -> Response:
    """What the mirrors page refreshes while a sync runs: counts, last runs, the daemon."""
    from imgsync.render import daemon_lines

    status = console.opener().status(limit=0)
    daemon = status.daemon if status.daemon and status.daemon.get("running") else None
    return json_response(
        {
            "mirrors": [_mirror_view(m, daemon, None) for m in status.mirrors],
            "daemon_lines": daemon_lines(status.daemon),
        }
    )


def _mirror_view(m: Any, daemon: dict[str, Any] | None, job: dict[str, Any] | None) -> dict[str, Any]:
    c = m.counts
    last = m.last_run
    watched = (daemon or {}).get("mirrors", {}).get(m.name)
    return {
        "name": m.name,
        "folder": shown(m.folder) if m.folder else None,
        "library": m.library,
        "remembered": m.remembered,
        "configured": m.folder is not None,
        "counts": {k: int(c.get(k, 0)) for k in ("synced", "pending", "rejected", "error", "files")},
        "last_run": None
        if last is None
        else {
            "status": last.status,
            "when": when(last.finished_at or last.started_at),
            "error": shown(last.error) if last.error else None,
            "counts": {k: v for k, v in last.counts.items() if v},
        },
        "daemon": None
        if watched is None
        else {
            "state": f"paused: {watched['paused']}" if watched.get("paused") else watched.get("mode", "?"),
            "queue": watched.get("queue", 0),
            "note": watched.get("note"),
            "last": (
                f"{watched['last_run'].get('what')} at {watched['last_run'].get('at')}"
                if watched.get("last_run")
                else None
            ),
        },
        "job": job,
    }


def files_page(console: Console, request: Request) -> Response:
    sync = console.opener()
    name = request.arg("name")
    kind = request.arg("kind", "rejected")
    if kind not in ("rejected", "pending"):
        raise HttpError(400, "kind: 'rejected' or 'pending'")
    number = request.int_arg("page", 1, 1, 10**7)
    offset = (number - 1) * FILES_PER_PAGE
    rows = sync.files(name, kind, offset=offset, limit=FILES_PER_PAGE + 1)  # one more: is there a next page?
    mirror = _configured(sync, name)
    files = [
        {
            "path": shown(path),
            "reason": shown(reason),
            "thumb": file_thumb_url(name, path) if mirror is not None else None,
        }
        for path, reason in rows[:FILES_PER_PAGE]
    ]
    return page(
        "files.html",
        active="mirrors",
        name=name,
        kind=kind,
        files=files,
        page=number,
        first=offset + 1,
        has_next=len(rows) > FILES_PER_PAGE,
        folder=shown(mirror.folder) if mirror is not None else None,
    )


def _configured(sync: Imgsync, name: str) -> MirrorConfig | None:
    return next((m for m in sync.mirrors if m.name == name), None)


# --------------------------------------------------------------------------- sync now


def sync_start(console: Console, request: Request) -> Response:
    from imgsync.console.jobs import Busy

    name = str(request.json().get("mirror", ""))
    if _configured(console.opener(), name) is None:
        raise HttpError(404, f"no mirror named {name!r} is configured or remembered")
    try:
        job = console.jobs.start(name)
    except Busy as e:
        raise HttpError(409, str(e)) from None
    return json_response(job.as_json(), 202)


def job_json(console: Console, request: Request) -> Response:
    job = console.jobs.get(request.arg("id"))
    if job is None:
        raise HttpError(404, "no such job (the console was restarted?)")
    return json_response(job.as_json())


# --------------------------------------------------------------------------- search


def search_page(console: Console, request: Request) -> Response:
    sync = console.opener()
    choices = [{"value": f"mirror:{m.name}", "label": f"{m.name} ({m.library})"} for m in sync.mirrors]
    choices += [{"value": f"library:{lib}", "label": f"library {lib}"} for lib in LIBRARIES]
    default = f"library:{sync.default_library()}"
    if len(sync.mirrors) == 1:
        default = f"mirror:{sync.mirrors[0].name}"
    return page(
        "search.html",
        active="search",
        choices=choices,
        default=default,
        tag_libraries=[n for n, lib in LIBRARIES.items() if lib.labels == "tags"],
    )


def search_json(console: Console, request: Request) -> Response:
    """POST: the query image as the body (any type the browser has), or JSON {"url": ...}. Query string:
    in = mirror:NAME | library:NAME, tags = "1,2", tag_logic, top."""
    from imgsync.query import parse_tags

    sync = console.opener()
    scope = request.arg("in", f"library:{sync.default_library()}")
    kind, _, value = scope.partition(":")
    only: MirrorConfig | None = None
    if kind == "mirror":
        only = _configured(sync, value)
        if only is None:
            raise HttpError(404, f"no mirror named {value!r}")
        library = only.library
    elif kind == "library" and value in LIBRARIES:
        library = value
    else:
        raise HttpError(400, f"in: expected mirror:NAME or library:NAME, got {scope!r}")
    tags = parse_tags(request.query.get("tags"))
    tag_logic = request.query.get("tag_logic", "and")
    if tag_logic not in ("and", "or"):
        raise HttpError(400, "tag_logic: 'and' or 'or'")
    top = request.int_arg("top", 10, 1, MAX_RESULTS)
    if (request.headers.get("content-type") or "").startswith("application/json"):
        url = str(request.json().get("url", "")).strip()
        if not url.lower().startswith(("http://", "https://")):
            raise UsageError("url: give an http(s) URL (the gallery fetches it)")
        query: bytes | str = url
    else:
        query = request.body()
        if not query:
            raise UsageError("no image: drop, paste or choose one, or give a URL")
    with console.gallery_calls:
        hits = sync.search(query, library=library, tags=tags, tag_logic=tag_logic, top=top)
    mirrors = [only] if only is not None else list(sync.mirrors)
    out = []
    for hit in hits:
        files = located(hit.paths, mirrors)
        if only is not None and not files:
            continue  # an entry of the library that is not this mirror's
        thumb = (
            files[0]["thumb"]
            if files
            else (entry_thumb_url(library, hit.cont_sign) if sync.config.gallery.is_local else None)
        )
        out.append(
            {
                "score": round(hit.score, 4),
                "cont_sign": hit.cont_sign,
                "brief": shown(hit.brief),
                "files": files,
                "thumb": thumb,
                "paths": [shown(p) for p in hit.paths],
            }
        )
    return json_response({"library": library, "hits": out})


def located(paths: Iterable[Path], mirrors: Sequence[MirrorConfig]) -> list[dict[str, str]]:
    """Which mirror, and where in its folder, each absolute path is (paths outside every mirror's folder
    are left out: no thumbnail can be served for them)."""
    out = []
    for path in paths:
        for m in mirrors:
            rel = _inside(Path(path), m.folder)
            if rel is not None:
                out.append(
                    {"mirror": m.name, "path": shown(rel), "full": shown(path), "thumb": file_thumb_url(m.name, rel)}
                )
                break
    return out


def _inside(path: Path, folder: Path) -> str | None:
    roots = dict.fromkeys([folder.expanduser(), Path(os.path.realpath(folder.expanduser()))])
    for root in roots:
        if path.is_relative_to(root) and path != root:
            return path.relative_to(root).as_posix()
    return None


# --------------------------------------------------------------------------- the gallery's entries


def gallery_page(console: Console, request: Request) -> Response:
    sync = console.opener()
    library = request.arg("library", sync.default_library())
    if library not in LIBRARIES:
        raise HttpError(400, f"library: one of {', '.join(LIBRARIES)}")
    number = request.int_arg("page", 1, 1, 10**7)
    result = sync.entries(library, offset=(number - 1) * ENTRIES_PER_PAGE, limit=ENTRIES_PER_PAGE)
    local = sync.config.gallery.is_local
    entries = []
    for e in result.entries:
        files = located(e.paths, sync.mirrors)
        thumb = entry_thumb_url(library, e.cont_sign) if e.has_copy else files[0]["thumb"] if files else None
        entries.append(
            {
                "cont_sign": e.cont_sign,
                "brief": shown(e.brief),
                "tags": ",".join(map(str, e.tags)),
                "class_ids": [c for c in e.class_ids if c],
                "mirror": e.mirror,
                "thumb": thumb,
                "paths": [shown(p) for p in e.paths],
            }
        )
    pages = max(1, -(-result.total // ENTRIES_PER_PAGE))
    return page(
        "gallery.html",
        active="gallery",
        library=library,
        source=result.source,
        total=result.total,
        entries=entries,
        page=number,
        pages=pages,
        first=result.offset + 1,
        local=local,
        gallery=sync.gallery_info(),
        labels=LIBRARIES[library].labels,
    )


def entry_edit(console: Console, request: Request) -> Response:
    from imgsync.query import parse_tags

    body = request.json()
    library, cont_sign = str(body.get("library", "")), str(body.get("cont_sign", ""))
    brief = body.get("brief")
    tags = body.get("tags")
    with console.gallery_calls:
        console.opener().edit_entry(
            library,
            cont_sign,
            brief=None if brief is None else str(brief),
            tags=None if tags is None else parse_tags(str(tags)),
        )
    return json_response({"ok": True})


def entry_delete(console: Console, request: Request) -> Response:
    body = request.json()
    with console.gallery_calls:
        console.opener().delete_entry(str(body.get("library", "")), str(body.get("cont_sign", "")))
    return json_response({"ok": True})


# --------------------------------------------------------------------------- thumbnails


def thumb_file(console: Console, request: Request) -> Response:
    sync = console.opener()
    name, path = request.arg("mirror"), request.arg("path")
    mirror = _configured(sync, name)
    if mirror is None:
        raise HttpError(404, f"no mirror named {name!r} is configured or remembered")
    try:
        fd = open_in_folder(mirror.folder, path)
    except PathRefused as e:
        raise HttpError(403, f"refused: {e}") from None
    except FileNotFoundError:
        raise HttpError(404, "no such file in the mirror's folder") from None
    except OSError as e:
        raise HttpError(403, f"cannot read it: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        key = file_key(name, f.fileno())
        return _thumbnail(console, request, key, lambda: make_thumbnail(f))


def thumb_entry(console: Console, request: Request) -> Response:
    sync = console.opener()
    library, cont_sign = request.arg("library"), request.arg("cont_sign")
    if library not in LIBRARIES:
        raise HttpError(400, f"library: one of {', '.join(LIBRARIES)}")
    key = entry_key(sync.gallery_identity(), library, cont_sign)

    def make() -> bytes | None:
        copy = sync.entry_copy(library, cont_sign)
        if copy is None:
            raise HttpError(404, "this entry has no stored working copy")
        return make_thumbnail(copy)

    return _thumbnail(console, request, key, make)


def _thumbnail(console: Console, request: Request, key: str, make: Any) -> Response:
    etag = f'"{key[:32]}"'
    headers = [("ETag", etag)]
    if request.headers.get("if-none-match") == etag:
        return Response(b"", 304, "image/jpeg", headers, cache="private, no-cache")
    data = console.thumbs.get(key)
    if data is None:
        data = make() or b""
        console.thumbs.put(key, data)
    if not data:  # does not decode: a "no preview" picture, so the page keeps its layout
        return static_file("nopreview.svg")
    return Response(data, 200, "image/jpeg", headers, cache="private, no-cache")


# --------------------------------------------------------------------------- the table


def _static(name: str) -> Handler:
    return lambda console, request: static_file(name)


ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/"): mirrors_page,
    ("GET", "/mirror"): files_page,
    ("GET", "/search"): search_page,
    ("GET", "/gallery"): gallery_page,
    ("GET", "/thumb/file"): thumb_file,
    ("GET", "/thumb/entry"): thumb_entry,
    ("GET", "/api/status"): status_json,
    ("POST", "/api/search"): search_json,
    ("POST", "/api/sync"): sync_start,
    ("GET", "/api/jobs"): job_json,
    ("POST", "/api/entry/edit"): entry_edit,
    ("POST", "/api/entry/delete"): entry_delete,
    **{("GET", f"/static/{n}"): _static(n) for n in ("console.css", "console.js", "nopreview.svg")},
}
