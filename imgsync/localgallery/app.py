"""The local gallery's WSGI application: routing and HTTP concerns only.

    request ─► route (path, method) ─► token check (110/111) ─► QPS limit (18)
            ─► library enabled? (216017) ─► form body ─► protocol.parse_request (216xxx)
            ─► url fetch (2821xx) ─► Engine ─► JSON

Every answer is JSON. API errors go out with HTTP 200 as {"error_code", "error_msg", "log_id"}, as the
cloud does (api.md §5); only the token endpoint uses 400/401 for its OAuth-style errors. A store that
cannot do the call now (its database unreachable, its disk full) answers 2 "Service temporarily
unavailable" with the reason, which clients retry. An unexpected exception becomes 282000 "internal
error" and is logged here, with the access token redacted and without the request's form (which holds
the image and brief). The server keeps serving either way.

GET /health (no token: for load balancers) answers 200 {"status": "ok", ...} when the gallery can
serve, else 503 {"status": "unavailable", "error": why}; the body also names the store and the last
change applied to this replica's indexes. It is not a cloud API: the cloud has no such path.
"""

from __future__ import annotations

import json
import logging
import secrets
import traceback
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl

from imgsync.libraries import LIBRARIES, MAX_RESULTS, TOKEN_PATH, route_table
from imgsync.localgallery import protocol
from imgsync.localgallery.auth import Authority, TokenAnswer
from imgsync.localgallery.errors import (
    INTERNAL_ERROR,
    NOT_INITIALIZED,
    QPS_LIMIT,
    SERVICE_UNAVAILABLE,
    UNSUPPORTED_METHOD,
    ApiError,
)
from imgsync.localgallery.fetch import UrlFetcher
from imgsync.localgallery.protocol import (
    AddRequest,
    ApiRequest,
    ContSigns,
    ImageBytes,
    SearchRequest,
    Target,
    UpdateRequest,
)
from imgsync.localgallery.ratelimit import RateLimiter
from imgsync.localgallery.store import StoreError

log = logging.getLogger("imgsync.localgallery")

HEALTH_PATH = "/health"
_FORM_TYPE = "application/x-www-form-urlencoded"
_JSON_HEADERS = [("Content-Type", "application/json;charset=utf-8")]
_ROUTES = route_table()
StartResponse = Callable[..., Any]


class Engine(Protocol):
    """What the app needs from imgsync.localgallery.engine.Engine."""

    def add(
        self,
        library: str,
        image: bytes,
        *,
        brief: str,
        tags: tuple[int, ...] = (),
        class_ids: tuple[int | None, int | None] = (None, None),
    ) -> str: ...

    def search(
        self,
        library: str,
        image: bytes,
        *,
        tags: tuple[int, ...] = (),
        tag_logic: int = 0,
        class_ids: tuple[int | None, int | None] = (None, None),
        pn: int = 0,
        rn: int = 300,
    ) -> tuple[list[tuple[str, float, str]], bool]: ...

    def cont_sign_of(self, library: str, image: bytes) -> str: ...

    def update(
        self,
        library: str,
        cont_sign: str,
        *,
        brief: str | None = None,
        tags: tuple[int, ...] | None = None,
        class_ids: tuple[int | None, int | None] | None = None,
    ) -> None: ...

    def delete(self, library: str, cont_signs: Sequence[str]) -> int: ...

    def health(self) -> dict[str, object]: ...


def library_not_enabled(library: str) -> ApiError:
    """The cloud's answer for a library the account has not created (api.md §6.1: 216017 "not
    initialized", 未建库). Which of 6 "No permission" or 216017 the cloud gives for a library that is
    not enabled is unconfirmed; we answer 216017, the per-library one."""
    return ApiError(NOT_INITIALIZED)


def check_libraries(libraries: Collection[str] | None) -> frozenset[str] | None:
    """The enabled-library set (None: all), ValueError naming an unknown library."""
    if libraries is None:
        return None
    unknown = sorted(set(libraries) - set(LIBRARIES))
    if unknown:
        raise ValueError(f"unknown library {unknown[0]!r} (known: {', '.join(LIBRARIES)})")
    return frozenset(libraries)


def new_log_id() -> int:
    """A random 63-bit log id (fits int64 and JSON integers; like the cloud's ~19-digit ids)."""
    return secrets.randbits(63)


class GalleryApp:
    def __init__(
        self,
        engine: Engine,
        authority: Authority,
        fetcher: UrlFetcher,
        *,
        limiter: RateLimiter | None = None,
        libraries: Collection[str] | None = None,
    ) -> None:
        """`libraries`: the libraries this gallery's account has (None: all five). The others answer
        216017 "not initialized" to every call, as a cloud account answers for a library it never
        created; `imgsync doctor` tests its library check against this."""
        self._libraries = check_libraries(libraries)
        self._engine = engine
        self._authority = authority
        self._fetcher = fetcher
        self._limiter = limiter

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            status, body = self._dispatch(environ)
        except ApiError as e:
            status, body = 200, {**e.payload(), "log_id": new_log_id()}
        except StoreError as e:  # logged where it happened (the store knows the details)
            status, body = 200, {**ApiError(SERVICE_UNAVAILABLE, str(e)).payload(), "log_id": new_log_id()}
        except Exception:  # noqa: BLE001 - the one place that turns a bug into an answer, not a crash
            log.error(
                "internal error on %s %s:\n%s",
                environ.get("REQUEST_METHOD"),
                environ.get("PATH_INFO"),
                _redacted_traceback(environ),
            )
            status, body = 200, {**ApiError(INTERNAL_ERROR).payload(), "log_id": new_log_id()}
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 503: "Service Unavailable"}.get(status, "OK")
        start_response(f"{status} {reason}", [*_JSON_HEADERS, ("Content-Length", str(len(data)))])
        return [data]

    # --- routing ---------------------------------------------------------------------------------

    def _dispatch(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if path == TOKEN_PATH:
            answer = self._token(environ, method)
            return answer.status, answer.body
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            return self._health()
        route = _ROUTES.get(path)
        # Unknown paths and non-POST calls get the cloud's "no such API" answer (error 3).
        if route is None or method != "POST":
            raise ApiError(UNSUPPORTED_METHOD)
        library, op = route
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        api_key = self._authority.check(protocol.clean_access_token(query.get("access_token")))
        if self._limiter is not None and not self._limiter.allow(api_key):
            raise ApiError(QPS_LIMIT)
        if self._libraries is not None and library.name not in self._libraries:
            raise library_not_enabled(library.name)
        form = _read_form(environ)
        request = protocol.parse_request(library, op, form)
        return 200, {"log_id": new_log_id(), **self._execute(request)}

    def _token(self, environ: dict[str, Any], method: str) -> TokenAnswer:
        params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        if method == "POST":
            try:
                params.update(_read_form(environ))  # the Node and Java SDKs POST the form
            except ApiError:
                pass  # an unreadable body simply adds no parameters
        return self._authority.issue(params)

    def _health(self) -> tuple[int, dict[str, Any]]:
        report = dict(self._engine.health())
        ok = bool(report.pop("ok"))
        return (200 if ok else 503), {"status": "ok" if ok else "unavailable", **report}

    # --- the calls -------------------------------------------------------------------------------

    def _execute(self, req: ApiRequest) -> dict[str, Any]:
        engine = self._engine
        if isinstance(req, AddRequest):
            image = self._image_bytes(req.source)
            return {
                "cont_sign": engine.add(req.library, image, brief=req.brief, tags=req.tags, class_ids=req.class_ids)
            }
        if isinstance(req, SearchRequest):
            return self._search(req)
        signs = self._cont_signs(req.library, req.target)
        if isinstance(req, UpdateRequest):
            engine.update(req.library, signs[0], brief=req.brief, tags=req.tags, class_ids=req.class_ids)
        else:
            engine.delete(req.library, signs)
        return {}

    def _search(self, req: SearchRequest) -> dict[str, Any]:
        image = self._image_bytes(req.source)
        hits, more = self._engine.search(
            req.library, image, tags=req.tags, tag_logic=req.tag_logic, class_ids=req.class_ids, pn=req.pn, rn=req.rn
        )
        return {
            "result_num": len(hits),
            "result": [{"cont_sign": cs, "score": float(score), "brief": brief} for cs, score, brief in hits],
            # Nothing lies beyond the 1000th result, whatever the engine holds.
            "has_more": bool(more) and req.pn + req.rn < MAX_RESULTS,
        }

    def _image_bytes(self, source: protocol.ImageSource) -> bytes:
        if isinstance(source, ImageBytes):
            return source.data
        return self._fetcher.fetch(source.url)

    def _cont_signs(self, library: str, target: Target) -> tuple[str, ...]:
        if isinstance(target, ContSigns):
            return target.signs
        return (self._engine.cont_sign_of(library, self._image_bytes(target)),)


def _read_form(environ: dict[str, Any]) -> dict[str, str]:
    """The request's form fields. A body that is not form-urlencoded carries no fields (so the call
    fails on its first missing parameter); a missing Content-Type is read as form-urlencoded."""
    content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    if content_type not in ("", _FORM_TYPE):
        return {}
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    # waitress has already bounded the body by max_request_body_size and buffered it, so reading
    # without a length (a chunked body) is safe here.
    stream = environ["wsgi.input"]
    body = stream.read(length) if length > 0 else stream.read()
    return protocol.parse_form(body)


def _redacted_traceback(environ: dict[str, Any]) -> str:
    text = traceback.format_exc()
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    token = protocol.clean_access_token(query.get("access_token"))
    return text.replace(token, "<access_token>") if token else text
