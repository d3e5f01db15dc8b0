"""The console's WSGI application: the request/response plumbing, the guards every request passes, and
the route table (handlers in routes.py).

    request ─► Host check (loopback) ─► token: ?token= sets the cookie and redirects, else the cookie
            ─► Origin check (anything but GET/HEAD) ─► route ─► handler ─► response + security headers

Every response carries a Content-Security-Policy that allows only the console's own scripts, styles
and images (no inline script, no CDN, no frames), and pages are not cached.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from imgsync.console.auth import Guard
from imgsync.console.pages import render
from imgsync.errors import (
    GalleryError,
    GalleryNotFoundError,
    GalleryRequestError,
    ImgsyncError,
    LockHeldError,
    UsageError,
)

if TYPE_CHECKING:
    from imgsync.api import Imgsync
    from imgsync.console.jobs import DaemonJobs, Jobs
    from imgsync.console.thumbs import ThumbCache

log = logging.getLogger("imgsync.console")

#: The largest request body taken (a search query image; the gallery takes at most 4 MB of base64,
#: larger pictures are shrunk first).
MAX_BODY = 32 * 1024 * 1024

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Response:
    body: bytes
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: pages and JSON are never cached; thumbnails and static files say their own
    cache: str = "no-store"


def json_response(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value, ensure_ascii=True).encode(), status, "application/json")


class Request:
    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO", "/") or "/"
        # A non-UTF-8 file name travels percent-encoded; surrogateescape gives back the str os.fsdecode
        # made of it (the manifest's spelling).
        self.query = dict(
            parse_qsl(
                environ.get("QUERY_STRING", ""), keep_blank_values=True, encoding="utf-8", errors="surrogateescape"
            )
        )
        self.headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                self.headers[key.replace("_", "-").lower()] = environ[key]

    def arg(self, name: str, default: str | None = None) -> str:
        value = self.query.get(name, default)
        if value is None:
            raise HttpError(400, f"missing parameter {name!r}")
        return value

    def int_arg(self, name: str, default: int, lo: int, hi: int) -> int:
        text = self.query.get(name)
        if text is None or text == "":
            return default
        if not text.isdecimal():
            raise HttpError(400, f"{name}: expected a whole number, got {text!r}")
        return max(lo, min(hi, int(text)))

    def body(self) -> bytes:
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            raise HttpError(400, "bad Content-Length") from None
        if length > MAX_BODY:
            raise HttpError(413, f"at most {MAX_BODY // (1024 * 1024)} MB")
        return self.environ["wsgi.input"].read(length) if length else b""

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body() or b"{}")
        except ValueError:
            raise HttpError(400, "the body is not JSON") from None
        if not isinstance(value, dict):
            raise HttpError(400, "expected a JSON object")
        return value


class Reopened:
    """The API for each request, opened again when the config file or the state dir's remembered mirrors
    changed (their mtimes): a config edit or a folder remembered by another command shows at once, and
    an unchanged config is not read again, so what loading it says (a key in a world-readable file) is
    said once, not on every request. Opening failing (a config broken meanwhile) is the request's error;
    the next request tries again."""

    def __init__(self, open_api: Callable[[], Imgsync]) -> None:
        self._open = open_api
        self._lock = threading.Lock()
        self._sync: Imgsync | None = None
        self._seen: tuple[int | None, ...] = ()

    def __call__(self) -> Imgsync:
        with self._lock:
            if self._sync is None or self._stamp(self._sync) != self._seen:
                sync = self._open()
                self._sync, self._seen = sync, self._stamp(sync)
            return self._sync

    @staticmethod
    def _stamp(sync: Imgsync) -> tuple[int | None, ...]:
        from imgsync.remembered import remembered_path

        out = []
        for path in (sync.config_path, remembered_path(sync.state_dir)):
            try:
                out.append(os.stat(path).st_mtime_ns if path is not None else None)
            except OSError:
                out.append(None)
        return tuple(out)


@dataclass
class Console:
    """What the handlers share: how to open the API (fresh per request, so a config edit or a mirror
    remembered by another command shows at once), the guard, the thumbnail cache and the sync jobs."""

    opener: Callable[[], Imgsync]
    guard: Guard
    thumbs: ThumbCache
    jobs: Jobs | DaemonJobs
    #: served by `imgsync watch --ui` ("Sync now" asks the daemon)
    in_daemon: bool = False
    #: one search or entry change at a time: each opens the gallery (for the embedded one, starts it or
    #: finds the process that serves it), and two opening it at once would race for its data dir
    gallery_calls: threading.Lock = field(default_factory=threading.Lock)


Handler = Callable[[Console, Request], Response]


class ConsoleApp:
    def __init__(self, console: Console, routes: dict[tuple[str, str], Handler]) -> None:
        self.console = console
        self.routes = routes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._handle(request)
        except HttpError as e:
            response = error_response(request, e.status, e.message)
        except Exception:  # noqa: BLE001 - logged, answered; the console keeps serving
            log.exception("console: %s %s failed", request.method, request.path)
            response = error_response(request, 500, "internal error (see the console's log)")
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Cache-Control", response.cache),
            *SECURITY_HEADERS,
            *response.headers,
        ]
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [b"" if request.method == "HEAD" else response.body]

    def _handle(self, request: Request) -> Response:
        guard = self.console.guard
        if not guard.host_ok(request.headers):
            # DNS rebinding: a foreign name that resolves to loopback. Say nothing more.
            return Response(b"Misdirected request\n", 421, "text/plain; charset=utf-8")
        token = request.query.get("token")
        if token is not None and request.method in ("GET", "HEAD"):
            if not guard.token_ok(token):
                raise HttpError(401, "this token is not the console's: open the URL `imgsync ui` printed")
            rest = {k: v for k, v in request.query.items() if k != "token"}
            target = request.path + (f"?{urlencode(rest, encoding='utf-8', errors='surrogateescape')}" if rest else "")
            return Response(b"", 303, headers=[("Location", target), ("Set-Cookie", guard.cookie())])
        if not guard.cookie_ok(request.headers):
            raise HttpError(
                401, "this console needs its access token: open the URL `imgsync ui` printed (it ends in ?token=...)"
            )
        problem = guard.origin_problem(request.method, request.headers)
        if problem is not None:
            raise HttpError(403, f"refused: {problem}")
        handler = self.routes.get((request.method if request.method != "HEAD" else "GET", request.path))
        if handler is None:
            if any(path == request.path for _, path in self.routes):
                raise HttpError(405, f"{request.method} is not allowed here")
            raise HttpError(404, f"no page {request.path}")
        try:
            return handler(self.console, request)
        except ImgsyncError as e:
            raise HttpError(status_of(e), str(e)) from None


def status_of(error: ImgsyncError) -> int:
    from imgsync.entries import ManagedEntryError

    if isinstance(error, (ManagedEntryError, LockHeldError)):
        return 409
    if isinstance(error, GalleryNotFoundError):
        return 404
    if isinstance(error, (UsageError, GalleryRequestError)):
        return 400
    if isinstance(error, GalleryError):
        return 502
    return 500


def error_response(request: Request, status: int, message: str) -> Response:
    """JSON for the API (/api/...), a small page for the rest; images get a bare status."""
    if request.path.startswith("/api/"):
        return json_response({"error": message}, status)
    if request.path.startswith(("/thumb/", "/static/")):
        return Response(message.encode("utf-8", "backslashreplace") + b"\n", status, "text/plain; charset=utf-8")
    try:
        body = render(
            "error.html",
            status=status,
            phrase=HTTPStatus(status).phrase,
            message=message,
            signed_in=status not in (401, 421),
        )
    except Exception:  # noqa: BLE001 - a broken template must not hide the error itself
        body = f"{status} {message}\n"
    return Response(body.encode("utf-8", "backslashreplace"), status)


def static_file(name: str) -> Response:
    """A file of console/static (names are fixed by the route table, never taken from the request)."""
    kinds = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
    path = os.path.join(os.path.dirname(__file__), "static", name)
    with open(path, "rb") as f:
        return Response(f.read(), 200, kinds[os.path.splitext(name)[1]], cache="private, max-age=300")
