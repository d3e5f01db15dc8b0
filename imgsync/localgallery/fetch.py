"""Fetching `url=` inputs: http(s) only, bounded in time and size, and refusing internal addresses.

Errors follow the cloud's URL codes (api.md §6.2):
  282114  url empty or longer than 1024 bytes
  282111  not an http(s) URL, malformed, fetching switched off, or the host resolves to an address
          the operator did not allow (loopback, private, link-local, multicast, reserved, ...)
  282112  the download did not finish within the timeout
  282113  the host could not be reached or resolved, answered non-200, sent no image, or too much

SSRF: every hop (the URL and each redirect target) is checked before it is requested, by resolving the
host and judging every address it resolves to. After connecting, the peer address is checked again
before the body is read, so a DNS answer that changes between the check and the connection (DNS
rebinding) cannot return an internal page's content. Proxies from the environment are ignored.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from imgsync.libraries import MAX_IMAGE_BASE64, MAX_URL_BYTES
from imgsync.localgallery.clock import SYSTEM_CLOCK, Clock
from imgsync.localgallery.errors import (
    URL_DOWNLOAD_TIMEOUT,
    URL_FORMAT_ILLEGAL,
    URL_RESPONSE_INVALID,
    URL_SIZE_ERROR,
    ApiError,
)

#: The largest raw image whose base64 still fits the 4 MB limit.
MAX_FETCH_BYTES = MAX_IMAGE_BASE64 * 3 // 4
DEFAULT_TIMEOUT = 10.0
MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
# Leading bytes of the image formats a fetch may return (the engine then refuses formats the library
# does not take, such as GIF, with 216201, as it would for an uploaded file).
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a", b"RIFF", b"II*\x00", b"MM\x00*")

Resolver = Callable[[str, int], list[str]]


def judge_url(url: str) -> tuple[str, int]:
    """(host, port) of an acceptable URL, or ApiError 282114/282111. Pure."""
    size = len(url.encode("utf-8", "surrogatepass"))
    if size == 0 or size > MAX_URL_BYTES:
        raise ApiError(URL_SIZE_ERROR, f"url is {size} bytes; 1..{MAX_URL_BYTES} allowed")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ApiError(URL_FORMAT_ILLEGAL, "url contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ApiError(URL_FORMAT_ILLEGAL, "url is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ApiError(URL_FORMAT_ILLEGAL, "only http and https urls can be fetched")
    if not parts.hostname:
        raise ApiError(URL_FORMAT_ILLEGAL, "url has no host")
    return parts.hostname, port or (443 if scheme == "https" else 80)


def is_public_address(address: str) -> bool:
    """Whether a resolved address is an ordinary internet address a gallery may fetch from. Pure."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_private
    )


def looks_like_image(head: bytes) -> bool:
    return any(head.startswith(m) for m in _IMAGE_MAGIC)


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (what requests may connect to)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class UrlFetcher:
    """Downloads one image URL for an API call. Thread-safe (one requests.Session per fetch)."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        allow_private: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = MAX_FETCH_BYTES,
        clock: Clock = SYSTEM_CLOCK,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.enabled = enabled
        self.allow_private = allow_private
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._clock = clock
        self._resolve = resolver

    def fetch(self, url: str) -> bytes:
        if not self.enabled:
            raise ApiError(URL_FORMAT_ILLEGAL, "url inputs are switched off on this gallery; send image")
        deadline = self._clock.monotonic() + self._timeout
        with _Watchdog(self._timeout) as watchdog, requests.Session() as session:
            session.trust_env = False  # no proxies from the environment: they would bypass the address check
            session.mount("http://", watchdog.adapter())
            session.mount("https://", watchdog.adapter())
            try:
                for _ in range(MAX_REDIRECTS + 1):
                    self._check_target(url)
                    resp = self._get(session, url)
                    try:
                        if resp.is_redirect:
                            url = urljoin(url, resp.headers.get("Location", ""))
                            continue
                        return self._read_body(resp, deadline)
                    finally:
                        resp.close()
            except ApiError:
                if watchdog.expired.is_set():  # what broke was the watchdog's doing: the time is up
                    raise ApiError(URL_DOWNLOAD_TIMEOUT) from None
                raise
        raise ApiError(URL_RESPONSE_INVALID, f"more than {MAX_REDIRECTS} redirects")

    def _check_target(self, url: str) -> None:
        host, port = judge_url(url)
        if self.allow_private:
            return
        try:
            addresses = self._resolve(host, port)
        except (OSError, UnicodeError):
            raise ApiError(URL_RESPONSE_INVALID, "url host cannot be resolved") from None
        if not addresses or not all(is_public_address(a) for a in addresses):
            raise ApiError(
                URL_FORMAT_ILLEGAL,
                "url host resolves to an address this gallery may not fetch "
                "(loopback, private, link-local, multicast or reserved)",
            )

    def _get(self, session: requests.Session, url: str) -> requests.Response:
        try:
            resp = session.get(
                url,
                stream=True,
                allow_redirects=False,
                timeout=self._timeout,
                headers={"User-Agent": "imgsync-localgallery", "Accept": "image/*"},
            )
        except requests.Timeout:
            raise ApiError(URL_DOWNLOAD_TIMEOUT) from None
        except (requests.RequestException, ValueError, UnicodeError):
            raise ApiError(URL_RESPONSE_INVALID, "url cannot be fetched") from None
        if not self.allow_private and not is_public_address(_peer_address(resp) or "0.0.0.0"):
            resp.close()
            raise ApiError(URL_FORMAT_ILLEGAL, "url host connected to an address this gallery may not fetch")
        return resp

    def _read_body(self, resp: requests.Response, deadline: float) -> bytes:
        """The body, within the fetch's deadline however the host sends it. Each read returns what one
        recv gives (read1) under a socket timeout of the time left: a host that trickles a byte every
        few seconds keeps every single read short, and would otherwise hold a server thread for as long
        as it liked (requests' timeout is per read, and iter_content waits for a whole chunk)."""
        if resp.status_code != 200:
            raise ApiError(URL_RESPONSE_INVALID, f"url answered HTTP {resp.status_code}")
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise ApiError(URL_RESPONSE_INVALID, f"url body is over {self._max_bytes} bytes")
        sock = _socket_of(resp)
        body = bytearray()
        try:
            while True:
                left = deadline - self._clock.monotonic()
                if left <= 0:
                    raise ApiError(URL_DOWNLOAD_TIMEOUT)
                if sock is not None and sock.fileno() >= 0:  # (closed once http.client has read the whole body)
                    sock.settimeout(min(left, self._timeout))
                chunk = resp.raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                body += chunk
                if len(body) > self._max_bytes:
                    raise ApiError(URL_RESPONSE_INVALID, f"url body is over {self._max_bytes} bytes")
        except (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
            raise ApiError(URL_DOWNLOAD_TIMEOUT) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            raise ApiError(URL_RESPONSE_INVALID, "url download broke off") from None
        if not looks_like_image(bytes(body[:16])):
            raise ApiError(URL_RESPONSE_INVALID, "url did not return an image")
        return bytes(body)


class _Watchdog:
    """Ends a fetch at its deadline whatever the host does. requests' timeout is per read, so a host that
    sends its status line and headers a byte at a time never trips it (the body has its own bound,
    _read_body). Every connection the fetch's session makes is noted; when the time is up their sockets
    are shut down, which ends a blocked read at once, and `expired` says why it broke."""

    def __init__(self, seconds: float) -> None:
        self.expired = threading.Event()
        self._connections: list[HTTPConnection] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def adapter(self) -> HTTPAdapter:
        """A transport whose connections report to this watchdog as they connect."""
        note = self._note

        class Connection(HTTPConnection):
            def connect(self) -> None:
                note(self)
                super().connect()

        class SecureConnection(HTTPSConnection):
            def connect(self) -> None:
                note(self)
                super().connect()

        class Pool(HTTPConnectionPool):
            ConnectionCls = Connection

        class SecurePool(HTTPSConnectionPool):
            ConnectionCls = SecureConnection

        adapter = HTTPAdapter(max_retries=0)
        adapter.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": SecurePool}
        return adapter

    def _note(self, connection: HTTPConnection) -> None:
        if self.expired.is_set():  # (a redirect's next connection, after the time is up)
            raise OSError("the download's time is up")
        with self._lock:
            self._connections.append(connection)

    def _expire(self) -> None:
        self.expired.set()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            sock = connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # closed already


def _socket_of(resp: requests.Response) -> socket.socket | None:
    """The response's socket. urllib3 does not expose it publicly: it is found through the connection
    object or, once http.client has detached it, the body's file."""
    raw: Any = resp.raw
    candidates = (
        lambda: raw.connection.sock,
        lambda: raw._connection.sock,
        lambda: raw._fp.fp.raw._sock,
    )
    for get_sock in candidates:
        try:
            sock = get_sock()
        except AttributeError:
            continue
        if isinstance(sock, socket.socket):
            return sock
    return None


def _peer_address(resp: requests.Response) -> str | None:
    """The IP the response's connection is talking to."""
    sock = _socket_of(resp)
    try:
        return str(sock.getpeername()[0]) if sock is not None else None
    except OSError:
        return None
