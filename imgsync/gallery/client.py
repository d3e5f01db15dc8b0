"""The gallery client: one client for Baidu's image-search API and for imgsync's local gallery.

The only module that knows the wire format (api.md). Layers, inside out:

  build_form(...)            pure: call arguments → form fields (all values strings)
  raise_for_error(payload)   pure: the cloud's error codes → imgsync.errors classes (one table)
  GalleryClient._send        the one boundary where requests' exceptions become ours (redacted)
  GalleryClient._call        rate limiter → token (refreshed once on 110/111) → _send, under retry

Every call is POST {endpoint}{library path}/{op}?access_token=T with a form body. Messages say
what was attempted ("same_hq add failed: 216202 image size error") and never contain the API key,
secret key or token.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import logging
import random
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, NoReturn
from urllib.parse import quote_plus, urlsplit

import requests
import requests.adapters

from imgsync import libraries as cloud
from imgsync.clock import SYSTEM_CLOCK, Clock
from imgsync.errors import (
    GalleryAuthError,
    GalleryDuplicateError,
    GalleryError,
    GalleryNotFoundError,
    GalleryPermissionError,
    GalleryQuotaError,
    GalleryRateError,
    GalleryRejectedError,
    GalleryUnavailableError,
)
from imgsync.gallery.auth import Token, TokenCache, parse_token_answer
from imgsync.gallery.pacing import CEILING, LatencyMeter, calls_in_flight
from imgsync.gallery.ratelimit import RateLimiter
from imgsync.gallery.redact import install_log_redaction, redact
from imgsync.gallery.retry import RetryPolicy, call_with_retry
from imgsync.libraries import TOKEN_PATH, Library, Operation, get_library

log = logging.getLogger("imgsync.gallery")

ClassIds = tuple[int | None, int | None]

# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Hit:
    cont_sign: str
    score: float
    brief: str


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[Hit]
    has_more: bool


# --------------------------------------------------------------------------- errors (pure)

#: error_code → class. Sources: api.md §6 (the cloud's tables). Anything not listed is a refusal of
#: this one request (216100/216101/2162xx/2821xx/...): GalleryRejectedError.
ERROR_CLASSES: dict[int, type[GalleryError]] = {
    cloud.INVALID_PARAMETER: GalleryAuthError,  # invalid access_token parameter / token fetch failed
    cloud.TOKEN_INVALID: GalleryAuthError,  # access token invalid
    cloud.TOKEN_EXPIRED: GalleryAuthError,  # access token expired
    cloud.IAM_FAILED: GalleryAuthError,  # IAM certification failed (a BCE-signed request)
    15: GalleryAuthError,  # "app not exsits or create failed": the key's application is gone
    216110: GalleryAuthError,  # appid not exist
    cloud.NO_PERMISSION: GalleryPermissionError,  # image search not enabled for this application
    cloud.NOT_INITIALIZED: GalleryPermissionError,  # library not created ("not initialized")
    cloud.DAILY_LIMIT: GalleryQuotaError,  # daily request limit
    cloud.TOTAL_LIMIT: GalleryQuotaError,  # total request limit
    cloud.QPS_LIMIT: GalleryRateError,  # QPS limit
    cloud.UNKNOWN_ERROR: GalleryUnavailableError,  # unknown (server-internal) error
    cloud.SERVICE_UNAVAILABLE: GalleryUnavailableError,  # service temporarily unavailable
    4: GalleryUnavailableError,  # cluster over its limit
    13: GalleryUnavailableError,  # "get service token failed": the cloud's own token service
    cloud.INTERNAL_ERROR: GalleryUnavailableError,  # internal error
    216630: GalleryUnavailableError,  # recognize error
    cloud.ITEM_EXIST: GalleryDuplicateError,  # item has existed
    cloud.ITEM_NOT_EXIST: GalleryNotFoundError,  # item not exist
}
TOKEN_CODES = frozenset({cloud.TOKEN_INVALID, cloud.TOKEN_EXPIRED})
#: Codes that mean the endpoint is wrong rather than this request: say so in the message.
_WRONG_ENDPOINT = {
    cloud.UNSUPPORTED_METHOD: "no such API at this endpoint",
    cloud.SERVICE_NOT_SUPPORT: "this endpoint does not offer that service",
}

_INVALID_CLIENT = {
    "unknown client id": "the gallery does not know this API key; check IMGSYNC_API_KEY / [gallery] api_key",
    "client authentication failed": (
        "the secret key does not match this API key; check IMGSYNC_SECRET_KEY / [gallery] secret_key"
    ),
}


def _code(raw: object) -> int | str:
    if isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, int):
        return raw
    text = str(raw).strip()
    return int(text) if text.isascii() and text.isdecimal() else text


def raise_for_error(payload: Mapping[str, Any], what: str = "gallery call") -> None:
    """Raise the imgsync error for an error answer; return quietly for a success answer.

    Two shapes: the API's {"error_code", "error_msg"[, "cont_sign"]} and the token endpoint's
    OAuth {"error", "error_description"}.
    """
    if "error" in payload and "error_code" not in payload:
        _raise_oauth(str(payload.get("error")), str(payload.get("error_description") or ""), what)
    raw = payload.get("error_code")
    if raw is None or raw == 0 or raw == "0" or raw == "":
        return
    code = _code(raw)
    text = str(payload.get("error_msg") or "").strip()
    message = f"{what} failed: {code} {text}".rstrip()
    cls = ERROR_CLASSES.get(code, GalleryRejectedError) if isinstance(code, int) else GalleryRejectedError
    if isinstance(code, int) and code in _WRONG_ENDPOINT:
        message += f" ({_WRONG_ENDPOINT[code]}; check gallery.endpoint)"
    if cls is GalleryDuplicateError:
        cont_sign = payload.get("cont_sign")
        raise GalleryDuplicateError(message, code=code, cont_sign=str(cont_sign) if cont_sign else None)
    raise cls(message, code=code)


def _raise_oauth(error: str, description: str, what: str) -> NoReturn:
    detail = f"{error}: {description}" if description else error
    if error == "invalid_client":
        hint = _INVALID_CLIENT.get(description.strip().lower(), "the gallery refused the API key / secret key")
        raise GalleryAuthError(f"{what} failed: {hint} ({detail})", code=error)
    raise GalleryAuthError(f"{what} failed: the token endpoint refused the request ({detail})", code=error)


def parse_has_more(value: object) -> bool:
    """`has_more` as a bool: the docs show both true and "true" (api.md §5); absent means False."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", ""):
        return value.strip().lower() in ("true", "1")
    raise ValueError(f"has_more is neither a boolean nor 'true'/'false': {value!r}")


def parse_search_answer(payload: Mapping[str, Any]) -> SearchResult:
    """A successful search answer → SearchResult; ValueError when its shape is not the documented one."""
    raw = payload.get("result") or []
    if not isinstance(raw, list):
        raise ValueError("'result' is not a list")
    hits = []
    for item in raw:
        if not isinstance(item, Mapping) or not item.get("cont_sign"):
            raise ValueError(f"a result item has no cont_sign: {str(item)[:100]}")
        hits.append(Hit(str(item["cont_sign"]), float(item.get("score") or 0.0), str(item.get("brief") or "")))
    return SearchResult(hits, parse_has_more(payload.get("has_more")))


# --------------------------------------------------------------------------- forms (pure)


def _source(image: bytes | None, url: str | None, cont_sign: str | None, *, allow_sign: bool) -> dict[str, str]:
    given = [k for k, v in (("image", image), ("url", url), ("cont_sign", cont_sign)) if v is not None]
    names = "image, url or cont_sign" if allow_sign else "image or url"
    if len(given) != 1 or (given[0] == "cont_sign" and not allow_sign):
        raise ValueError(f"pass exactly one of {names} (got {', '.join(given) or 'none'})")
    if image is not None:
        # Plain base64, no "data:image/...;base64," header (api.md §3); encode_form url-encodes it.
        return {"image": _Base64Text.of(image)}
    if url is not None:
        return {"url": url}
    assert cont_sign is not None
    return {"cont_sign": cont_sign}


def _labels(lib: Library, tags: Sequence[int] | None, class_ids: ClassIds | None) -> dict[str, str]:
    form: dict[str, str] = {}
    if lib.labels == "class_id":
        if tags:
            raise ValueError(f"the {lib.name} library has class ids, not tags")
        if class_ids is not None:
            for name, value in zip(("class_id1", "class_id2"), class_ids, strict=True):
                if value is not None:
                    form[name] = str(int(value))
        return form
    if class_ids is not None and any(v is not None for v in class_ids):
        raise ValueError(f"only the product library has class ids; {lib.name} has tags")
    if tags:  # an empty tag list is "no tags": the API has no way to send "clear the tags"
        form["tags"] = ",".join(str(int(t)) for t in tags)
    return form


_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


class _Base64Text(str):
    """An image's base64 text as _source made it, with its ASCII bytes (`data`): encode_form escapes
    those as they are, without checking every character again nor encoding the text back to bytes.
    A str like any other for everyone else."""

    data: bytes

    @classmethod
    def of(cls, data: bytes) -> _Base64Text:
        raw = base64.b64encode(data)
        text = cls(raw.decode("ascii"))
        text.data = raw
        return text


def encode_form(form: Mapping[str, str]) -> bytes:
    """The form as an application/x-www-form-urlencoded body.

    Same bytes as urllib's urlencode, much faster for the image: base64 text only needs '+', '/' and
    '=' escaped, which bytes.replace does in C (urlencode walks a 400 KB image character by character:
    14 ms per 1 MP JPEG, more than the gallery spends on the whole add). In bytes, not str: half the
    time (0.6 vs 1.25 ms for a 1 MP JPEG), and the body needs no encoding afterwards. The image's text
    from _source (a _Base64Text) skips the character check, and its '=' are padding at the end only;
    the body is joined once."""
    parts: list[bytes] = []
    for key, value in form.items():
        if parts:
            parts.append(b"&")
        parts += (quote_plus(key).encode("ascii"), b"=")
        if type(value) is _Base64Text:
            body = value.data.rstrip(b"=")
            parts += (body.replace(b"+", b"%2B").replace(b"/", b"%2F"), b"%3D" * (len(value.data) - len(body)))
            continue
        raw = value.encode("ascii") if len(value) > 256 and value.isascii() else None
        if raw is not None and not raw.translate(None, _BASE64_CHARS):  # only base64's characters
            parts.append(raw.replace(b"+", b"%2B").replace(b"/", b"%2F").replace(b"=", b"%3D"))
        else:
            parts.append(quote_plus(value).encode("ascii"))
    return b"".join(parts)


def build_form(
    library: str,
    op: Operation,
    *,
    image: bytes | None = None,
    url: str | None = None,
    cont_sign: str | None = None,
    brief: str | None = None,
    tags: Sequence[int] | None = None,
    tag_logic: Literal["and", "or"] = "and",
    class_ids: ClassIds | None = None,
    pn: int = 0,
    rn: int | None = None,
) -> dict[str, str]:
    """The form of one call. ValueError for argument combinations that are programming errors."""
    lib = get_library(library)
    form = _source(image, url, cont_sign, allow_sign=op in ("update", "delete"))
    if op == "add":
        if not brief:
            raise ValueError("add needs a brief (the gallery requires one, api.md §4)")
        form["brief"] = brief
    elif op == "update":
        if brief is None and tags is None and class_ids is None:
            raise ValueError("update needs brief, tags or class_ids: there is nothing to change")
        if brief is not None:
            form["brief"] = brief
    if op in ("add", "search", "update"):
        form.update(_labels(lib, tags, class_ids))
    if op == "search":
        if tag_logic not in ("and", "or"):
            raise ValueError(f"tag_logic must be 'and' or 'or', got {tag_logic!r}")
        if lib.labels == "tags" and "tags" in form:
            form["tag_logic"] = "1" if tag_logic == "or" else "0"
        if pn or rn is not None:
            form["pn"] = str(int(pn))
        if rn is not None:
            form["rn"] = str(int(rn))
    return form


def batches(cont_signs: Sequence[str], size: int) -> list[str]:
    """Distinct cont_signs (first occurrence order), ';'-joined in batches of at most `size`."""
    unique = list(dict.fromkeys(s.strip() for s in cont_signs if s.strip()))
    return [";".join(unique[i : i + size]) for i in range(0, len(unique), size)]


# --------------------------------------------------------------------------- the client


@dataclass
class ClientStats:
    """Counters, for reports and tests: what this client sent and what it met."""

    requests: int = 0  # HTTP requests to API paths (retries included)
    token_fetches: int = 0
    retries: int = 0
    rate_errors: int = 0


class GalleryClient:
    """Calls one gallery (the cloud or a local gallery) with one API key. Thread-safe."""

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        secret_key: str,
        *,
        qps: float | None = None,
        in_flight: int | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (5.0, 60.0),
        retry: RetryPolicy = RetryPolicy(),
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        parts = urlsplit(endpoint.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"gallery endpoint must be an http(s) URL, got {endpoint!r}")
        if not api_key.strip() or not secret_key.strip():
            raise ValueError("api_key and secret_key must not be empty")
        self.endpoint = endpoint.strip().rstrip("/")
        # The SDKs strip keys too (api.md §8.1); a pasted newline must not become an auth failure.
        self._api_key = api_key.strip()
        self._secret_key = secret_key.strip()
        self._session = session if session is not None else _pooled_session()
        if is_loopback(parts.hostname):
            # A gallery on this machine (the embedded one, or one served here) is never reached through a
            # proxy: requests would send 127.0.0.1 to HTTP_PROXY unless NO_PROXY names it, and a proxy's
            # loopback is not ours. Any other endpoint (the cloud) keeps the environment's proxy settings.
            self._session.trust_env = False
        self._owns_session = session is None
        self._timeout = timeout
        self._retry = retry
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self.limiter = RateLimiter(qps, clock=clock)
        self.latency = LatencyMeter()
        self._in_flight = in_flight
        self._tokens = TokenCache(self._fetch_token, clock)
        self._give_up: Callable[[], bool] | None = None  # see retries_end_when
        self.stats = ClientStats()
        self._stats_lock = threading.Lock()
        install_log_redaction()
        _warn_if_cleartext(parts.scheme, parts.hostname)

    def __repr__(self) -> str:  # no keys in reprs either
        return f"GalleryClient({self.endpoint!r})"

    # --- the public calls ---------------------------------------------------------------------------

    def add(
        self,
        library: str,
        *,
        image: bytes | None = None,
        url: str | None = None,
        brief: str,
        tags: Sequence[int] = (),
        class_ids: ClassIds | None = None,
    ) -> str:
        """Add one image; returns its cont_sign.

        A duplicate (216681) raises GalleryDuplicateError with the existing entry's cont_sign when the
        gallery gives it; that includes a retry of an add whose first try reached the gallery.
        """
        form = build_form(library, "add", image=image, url=url, brief=brief, tags=tags, class_ids=class_ids)
        payload = self._call(library, "add", form)
        cont_sign = payload.get("cont_sign")
        if not cont_sign:
            raise GalleryUnavailableError(f"{library} add: the gallery's answer has no cont_sign")
        return str(cont_sign)

    def search(
        self,
        library: str,
        *,
        image: bytes | None = None,
        url: str | None = None,
        tags: Sequence[int] = (),
        tag_logic: Literal["and", "or"] = "and",
        class_ids: ClassIds | None = None,
        pn: int = 0,
        rn: int | None = None,
    ) -> SearchResult:
        form = build_form(
            library, "search", image=image, url=url, tags=tags, tag_logic=tag_logic, class_ids=class_ids, pn=pn, rn=rn
        )
        payload = self._call(library, "search", form)
        try:
            return parse_search_answer(payload)
        except (ValueError, TypeError) as e:
            raise GalleryUnavailableError(f"{library} search: unexpected answer from the gallery: {e}") from None

    def update(
        self,
        library: str,
        *,
        image: bytes | None = None,
        url: str | None = None,
        cont_sign: str | None = None,
        brief: str | None = None,
        tags: Sequence[int] | None = None,
        class_ids: ClassIds | None = None,
    ) -> None:
        form = build_form(
            library, "update", image=image, url=url, cont_sign=cont_sign, brief=brief, tags=tags, class_ids=class_ids
        )
        self._call(library, "update", form)

    def delete(
        self, library: str, *, image: bytes | None = None, url: str | None = None, cont_sign: str | None = None
    ) -> None:
        form = build_form(library, "delete", image=image, url=url, cont_sign=cont_sign)
        self._call(library, "delete", form)

    def delete_many(self, library: str, cont_signs: Sequence[str]) -> None:
        """Delete by cont_sign, in batches of at most the library's batch_delete_max.

        Every batch is sent even when one is answered "not found" (216680); GalleryNotFoundError is
        raised at the end only when every batch was answered so (nothing was there to delete).
        """
        groups = batches(cont_signs, get_library(library).batch_delete_max)
        not_found: list[GalleryNotFoundError] = []
        for group in groups:
            try:
                self._call(library, "delete", {"cont_sign": group})
            except GalleryNotFoundError as e:
                not_found.append(e)
                log.debug("%s delete: none of a batch of cont_signs was in the gallery", library)
        if groups and len(not_found) == len(groups):
            raise not_found[0]

    def authenticate(self) -> None:
        """Have the gallery accept the keys now (an access token, with the usual retries), before
        anything is decided on the assumption that it does: GalleryAuthError when it refuses them,
        GalleryUnavailableError when it cannot be reached. Free when a token is held already."""
        call_with_retry(
            self._tokens.get,
            self._retry,
            self._clock,
            self._rng,
            what="getting an access token",
            on_error=self._on_error,
            give_up=self._give_up,
        )

    def calls_in_flight(self) -> int:
        """How many calls the executor keeps in flight: as configured, else enough to reach this client's
        rate cap at the latency seen so far (pacing.py)."""
        if self._in_flight is not None:
            return self._in_flight
        return calls_in_flight(self.limiter.current_qps(), self.latency.mean)

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> GalleryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------------

    def _call(self, library: str, op: Operation, form: dict[str, str]) -> dict[str, Any]:
        what = f"{library} {op}"
        url = self.endpoint + get_library(library).path(op)
        return call_with_retry(
            lambda: self._call_once(what, url, form),
            self._retry,
            self._clock,
            self._rng,
            what=what,
            on_error=self._on_error,
            give_up=self._give_up,
        )

    @contextlib.contextmanager
    def retries_end_when(self, stop: Callable[[], bool]) -> Iterator[None]:
        """Inside: once stop() is true, a call that failed is not tried again and a backoff under way
        ends (the caller gets the last error). A run shutting down then ends with the calls it has in
        flight instead of waiting out their retries (up to ~30 s each): a stopping daemon must exit
        within its deadline, and an intent left open is what the next run's recovery is for."""
        before = self._give_up
        self._give_up = stop
        try:
            yield
        finally:
            self._give_up = before

    def _call_once(self, what: str, url: str, form: dict[str, str]) -> dict[str, Any]:
        """One try: a token (refreshed and tried again once if the gallery says 110/111), then the POST."""
        token = self._tokens.get()
        try:
            return self._api_post(what, url, form, token)
        except GalleryAuthError as e:
            if e.code not in TOKEN_CODES:
                raise
            log.info("%s: the gallery refused the access token (%s); fetching a new one", what, e.code)
            self._tokens.invalidate(token)
            return self._api_post(what, url, form, self._tokens.get())

    def _api_post(self, what: str, url: str, form: dict[str, str], token: str) -> dict[str, Any]:
        body = encode_form(form)  # before the slot: nothing but the send between the slot and the wire
        self.limiter.acquire()
        self._count("requests")
        log.debug("POST %s", what)
        started = self._clock.monotonic()
        try:
            return self._send(what, url, data=body, params={"access_token": token})
        finally:
            self.latency.observe(self._clock.monotonic() - started)

    def _fetch_token(self) -> Token:
        what = "getting an access token"
        self._count("token_fetches")
        payload = self._send(
            what,
            self.endpoint + TOKEN_PATH,
            data={
                "grant_type": "client_credentials",
                "client_id": self._api_key,
                "client_secret": self._secret_key,
            },
        )
        token = parse_token_answer(payload, self._clock.time())
        log.debug("got an access token valid for %.0f s", token.expires_in)
        return token

    def _send(
        self, what: str, url: str, *, data: Mapping[str, str] | bytes, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The one boundary: requests' exceptions and the gallery's answers become imgsync errors here,
        with every secret redacted. Raw exceptions are not chained (their texts hold the token)."""
        # The error is raised after the except blocks, not inside them: raised inside, it would keep the
        # raw exception (and its URL with the token) as __context__, even with `from None`.
        failure: str | None = None
        try:
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if isinstance(data, bytes) else None
            response = self._session.post(url, data=data, params=params, headers=headers, timeout=self._timeout)
        except requests.Timeout as e:
            failure = _timeout_text(e, self._timeout)
        except requests.RequestException as e:
            failure = f"cannot reach the gallery at {self.endpoint}: {_reason(e)}"
        if failure is not None:
            self._raise_unavailable(what, failure)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self._raise_unavailable(
                what,
                f"the gallery answered HTTP {response.status_code} "
                f"{response.reason or ''} without a JSON object".rstrip(),
            )
        payload = self._scrub(payload)
        raise_for_error(payload, what)
        if response.status_code >= 500:
            self._raise_unavailable(what, f"the gallery answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise GalleryRejectedError(
                f"{what} failed: the gallery answered HTTP {response.status_code}", code=response.status_code
            )
        return payload

    def _secrets(self) -> list[str]:
        return [self._api_key, self._secret_key, *self._tokens.seen]

    def _scrub(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Texts from the gallery that end up in messages, with secrets redacted (defence in depth)."""
        for key in ("error_msg", "error_description"):
            if isinstance(payload.get(key), str):
                payload[key] = redact(payload[key], self._secrets())
        return payload

    def _raise_unavailable(self, what: str, reason: str) -> NoReturn:
        raise GalleryUnavailableError(f"{what} failed: {redact(reason, self._secrets())}")

    def _on_error(self, error: GalleryError, will_retry: bool) -> None:
        if isinstance(error, GalleryRateError):
            self._count("rate_errors")
            self.limiter.slow_down()
        if will_retry:
            self._count("retries")

    def _count(self, name: str) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)


def _pooled_session() -> requests.Session:
    """A session that keeps a connection for each call the executor may have in flight (requests'
    default pool keeps 10 and drops the rest after use, so more calls would reconnect every time)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=CEILING)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _timeout_text(e: requests.Timeout, timeout: tuple[float, float]) -> str:
    if isinstance(e, requests.ConnectTimeout):
        return f"could not connect within {timeout[0]:g} s"
    return f"no answer within {timeout[1]:g} s"


_ERRNO = re.compile(r"\[Errno [^\]]*\][^'\")]*")


def _reason(e: requests.RequestException) -> str:
    """The root cause of a connection failure ("[Errno 111] Connection refused"), else the whole text."""
    text = str(e)
    match = _ERRNO.search(text)
    return match.group(0).strip() if match else text


def is_loopback(host: str | None) -> bool:
    """This machine's own address: `localhost`, 127.0.0.0/8 or ::1."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_if_cleartext(scheme: str, host: str | None) -> None:
    if scheme != "http" or host is None or is_loopback(host):
        return
    log.warning(
        "gallery endpoint %s uses plain http: the secret key and access tokens cross the network unencrypted", host
    )
