"""A loopback HTTP proxy that makes a local gallery look as far away as the cloud (issue 15).

Every request is read in full, held for `latency_s` (the network and the cloud's own work, as one fixed
delay), then forwarded to the upstream gallery and its answer passed back. It counts what went through:
requests, answers carrying error_code 18 (the gallery's QPS refusal), and the most requests in flight at
once, which says whether a client really keeps several calls going.

    with LatencyProxy("http://127.0.0.1:8808", latency_s=0.25) as proxy:
        ...point the client at proxy.url...
        proxy.requests, proxy.refusals, proxy.max_in_flight

Keep-alive on both sides: each client connection gets its own upstream connection, so a client that
reuses its connection pays no extra connect, as with the cloud. A request whose client disconnects while
it is held is still forwarded, as a request already on the wire would reach the cloud: that is the case
kill -9 tests want (the gallery acts on a call nobody hears the answer to).

`hook`, if given, is called for each request once it counts as in flight, before the delay: tests block
it on a barrier to make requests overlap without sleeping. Standard library only.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

#: Headers that belong to one hop, not to the request (RFC 9110 §7.6.1); Host is set for the upstream.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
#: Errors that mean "the other side went away"; the proxy says nothing about them.
GONE = (ConnectionError, TimeoutError, http.client.HTTPException, OSError)


@dataclass(frozen=True)
class Call:
    """One request as the proxy saw it: times on the proxy's monotonic clock, from the request read
    in full to its answer ready to be written; error_code from the answer's JSON."""

    path: str
    started: float
    ended: float
    status: int
    error_code: int | str | None


class LatencyProxy:
    def __init__(
        self,
        upstream: str,
        latency_s: float = 0.0,
        *,
        hook: Callable[[], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout: float = 120.0,
    ) -> None:
        if latency_s < 0:
            raise ValueError(f"latency_s must be ≥ 0, got {latency_s}")
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._upstream_timeout = upstream_timeout
        self.latency_s = latency_s
        self.hook = hook
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        self.calls: list[Call] = []
        #: Connections accepted from clients and opened to the upstream (keep-alive keeps both low).
        self.client_connections = 0
        self.upstream_connections = 0
        self._connections: set[socket.socket] = set()
        self._server = _Server((host, port), _handler_for(self))
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    # --- what it saw -----------------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Requests answered (counted before the answer is written, so a client that has its answer
        finds its request counted; a client gone meanwhile counts too)."""
        with self._lock:
            return len(self.calls)

    @property
    def refusals(self) -> int:
        """Answers whose JSON error_code is 18 (QPS limit reached)."""
        with self._lock:
            return sum(1 for c in self.calls if c.error_code in (18, "18"))

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def count(self, path_part: str) -> int:
        """Requests whose path contains `path_part` (e.g. "/add")."""
        with self._lock:
            return sum(1 for c in self.calls if path_part in c.path)

    # --- running ---------------------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, name="latency-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        # Idle keep-alive connections hold their handler threads in a read: end them now, not at exit.
        with self._lock:
            open_ones = list(self._connections)
        for sock in open_ones:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- used by the handler ---------------------------------------------------------------------------

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self, call: Call) -> None:
        with self._lock:
            self._in_flight -= 1
            self.calls.append(call)

    def _connect(self) -> http.client.HTTPConnection:
        with self._lock:
            self.upstream_connections += 1
        return http.client.HTTPConnection(self._upstream_host, self._upstream_port, timeout=self._upstream_timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many clients may connect at once (kill tests start several processes; benchmarks keep calls in flight).
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that vanished is normal here (kill -9); the handler already recorded its call


def _handler_for(proxy: LatencyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive to the client
        upstream: http.client.HTTPConnection | None = None

        def setup(self) -> None:
            super().setup()
            with proxy._lock:
                proxy._connections.add(self.connection)
                proxy.client_connections += 1

        def finish(self) -> None:
            with proxy._lock:
                proxy._connections.discard(self.connection)
            if self.upstream is not None:
                self.upstream.close()
            try:
                super().finish()
            except OSError:
                pass

        def do_GET(self) -> None:
            self._forward()

        def do_POST(self) -> None:
            self._forward()

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            proxy._enter()
            started = time.monotonic()
            # The path without its query: the query holds the access token.
            path, recorded = urlsplit(self.path).path, False
            try:
                if proxy.hook is not None:
                    proxy.hook()
                if proxy.latency_s:
                    time.sleep(proxy.latency_s)
                try:
                    status, reason, headers, answer = self._upstream_call(body)
                except GONE as e:
                    status, reason, headers = 502, "Bad Gateway", [("Content-Type", "application/json")]
                    answer = json.dumps({"error_code": 502, "error_msg": f"latency proxy: upstream: {e}"}).encode()
                    self.close_connection = True
                # Recorded before the answer is written: a client holding its answer finds its call counted.
                proxy._leave(Call(path, started, time.monotonic(), status, _error_code(answer)))
                recorded = True
                try:
                    self.send_response(status, reason)
                    for name, value in headers:
                        if name.lower() not in HOP_BY_HOP:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    self.wfile.flush()
                except GONE:
                    self.close_connection = True  # the client is gone (killed): its call was still made
            finally:
                if not recorded:  # the hook failed: no answer, the connection is dropped
                    proxy._leave(Call(path, started, time.monotonic(), 0, None))

        def _upstream_call(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            reused = self.upstream is not None
            for attempt in (1, 2):
                if self.upstream is None:
                    self.upstream = proxy._connect()
                try:
                    self.upstream.request(self.command, self.path, body=body, headers=headers)
                    response = self.upstream.getresponse()
                    answer = response.read()
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # An idle keep-alive connection the upstream had closed (servers close idle ones only,
                    # so it did not act on this request): once more on a fresh connection. A fresh one
                    # failing is a real failure.
                    self.upstream.close()
                    self.upstream = None
                    if attempt == 2 or not reused:
                        raise
                    continue
                if response.will_close:
                    self.upstream.close()
                    self.upstream = None
                return response.status, response.reason, response.getheaders(), answer
            raise AssertionError("unreachable")

    return Handler


def _error_code(answer: bytes) -> int | str | None:
    try:
        payload = json.loads(answer)
    except ValueError:
        return None
    return payload.get("error_code") if isinstance(payload, dict) else None
