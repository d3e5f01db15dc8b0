"""Running the local gallery: waitress serving GalleryApp, in a thread (tests, embedding) or in the
foreground (the CLI, stopping cleanly on SIGINT/SIGTERM).

Where its state lives, one of:
- a data dir (the default): the engine's SQLite and index files and, when no key is given, the
  server's own key (server-key.json). One process at a time.
- a PostgreSQL database (`database=`): entries, features, working copies and the server's own key.
  Any number of processes may serve one database; each is a stateless replica (no local files).
Tokens are stateless (auth.py): nothing to keep for them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from waitress import wasyncore
from waitress.server import create_server
from waitress.task import ThreadedTaskDispatcher

from imgsync.localgallery.app import GalleryApp, check_libraries
from imgsync.localgallery.auth import DEFAULT_TOKEN_TTL, Authority
from imgsync.localgallery.clock import SYSTEM_CLOCK, Clock
from imgsync.localgallery.fetch import DEFAULT_TIMEOUT, UrlFetcher
from imgsync.localgallery.ratelimit import RateLimiter
from imgsync.serving import quiet_queue_warnings

log = logging.getLogger("imgsync.localgallery")

#: waitress refuses bodies above this before reading them (HTTP 413). The image's base64 is at most
#: 4 MB; url-encoding adds up to 3x for '+', '/' and '=' (%2B ...), so 12 MB leaves room for any valid
#: call while stopping a client that streams without end.
MAX_BODY_BYTES = 12 * 1024 * 1024
#: waitress reads 8 kB per recv() by default: ~45 trips through its Python loop for one 1 MP JPEG's
#: body (~330 kB). 256 kB reads it in two or three.
RECV_BYTES = 256 * 1024
#: A request body larger than waitress's 512 kB default is spooled to a temp file: a 1 MP photo's add
#: (~0.5-1 MB once base64- and url-encoded) would then write and read /tmp on every call, and fail with
#: it full. Every accepted body fits in memory instead (the bound is MAX_BODY_BYTES per request).
INBUF_OVERFLOW = MAX_BODY_BYTES


@dataclass
class RunningGallery:
    url: str
    api_key: str
    secret_key: str
    #: The data dir (SQLite), or None when the gallery lives in a database.
    data_dir: Path | None
    #: True when this start created the key (the CLI prints the secret only then).
    created_key: bool = False
    #: The enabled libraries, or None when all are.
    libraries: tuple[str, ...] | None = None
    #: Where the gallery's state lives, for messages ("SQLite /path" or "PostgreSQL host:port/db", no password).
    store: str = ""
    _stop: Callable[[], None] = field(default=lambda: None, repr=False)

    def stop(self) -> None:
        self._stop()


def start_in_thread(
    data_dir: Path | str | None = None,
    *,
    database: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    keys: list[tuple[str, str]] | None = None,
    qps: float | None = None,
    allow_private_urls: bool = False,
    allow_url_fetch: bool = True,
    token_ttl: int = DEFAULT_TOKEN_TTL,
    threads: int = 4,
    clock: Clock = SYSTEM_CLOCK,
    fetch_timeout: float = DEFAULT_TIMEOUT,
    libraries: Collection[str] | None = None,
) -> RunningGallery:
    """Start serving on a daemon thread; returns once the socket is listening (port 0 → ephemeral).

    Its state: `data_dir` (SQLite) or `database` (a postgresql:// URL), exactly one.
    `libraries`: the libraries enabled (None: all); calls to the others answer 216017 "not initialized"."""
    from imgsync.localgallery.engine import Engine  # the search engine; imported late, it is heavy
    from imgsync.localgallery.store import open_store

    enabled = check_libraries(libraries)  # ValueError before anything is started
    if (data_dir is None) == (database is None):
        raise ValueError("serve either a data dir or a database")
    data_dir = None if data_dir is None else Path(data_dir)
    # One listening socket: a name such as "localhost" may resolve to several addresses, and waitress
    # would then bind each (on different ephemeral ports for port 0). Serve on the first one.
    host = str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        store = open_store(data_dir)  # takes the data dir's lock: DataDirInUseError if another process serves it
    else:
        from imgsync.localgallery.store_pg import PostgresStore

        assert database is not None
        store = PostgresStore(database, pool_size=threads + 2)
    socket_map: dict[int, Any] = {}
    try:
        created = False
        own_key = not keys
        if not keys:
            key, created = store.load_or_create_key()
            keys = [key]
        realm = store.token_realm()
        engine = Engine(store)  # owns the store from here on
    except BaseException:
        store.close()
        raise
    try:
        authority = Authority(keys, ttl=token_ttl, clock=clock, realm=realm)
        app = GalleryApp(
            engine,
            authority,
            UrlFetcher(enabled=allow_url_fetch, allow_private=allow_private_urls, timeout=fetch_timeout, clock=clock),
            limiter=RateLimiter(qps, clock=clock) if qps else None,
            libraries=enabled,
        )
        quiet_queue_warnings()
        # Our own dispatcher: waitress starts its worker threads before it binds, and a failed bind
        # would leave them running (six idle threads per refused port, for the life of the process).
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(threads)
        try:
            server: Any = create_server(
                app,
                map=socket_map,
                _dispatcher=dispatcher,
                host=host,
                port=port,
                threads=threads,
                max_request_body_size=MAX_BODY_BYTES,
                recv_bytes=RECV_BYTES,
                inbuf_overflow=INBUF_OVERFLOW,
                ident="imgsync-localgallery",
                clear_untrusted_proxy_headers=True,
            )
        except BaseException:
            dispatcher.shutdown(timeout=5)
            raise
    except BaseException:
        # A failed bind leaves waitress's half-made sockets in the map: close them, not leak them.
        wasyncore.close_all(socket_map, ignore_all=True)
        engine.close()
        raise
    thread = threading.Thread(target=server.run, name="localgallery-http", daemon=True)
    thread.start()
    stopped = threading.Event()
    announce = own_key and data_dir is not None

    def stop() -> None:
        if stopped.is_set():
            return
        stopped.set()
        # Sockets are closed from inside the server's own loop (closing them from this thread would
        # race with it). First stop accepting, then let the calls being served finish (queued ones
        # are cancelled), then close every connection: the loop ends when its socket map is empty.
        _pull(server, lambda: wasyncore.dispatcher.close(server))
        server.task_dispatcher.shutdown(timeout=5)
        _pull(server, lambda: wasyncore.close_all(server._map, ignore_all=True))
        thread.join(timeout=10)
        if announce:
            assert data_dir is not None
            _forget_serving(data_dir, url)
        engine.close()

    bound_host = server.effective_host
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    url = f"http://{shown}:{server.effective_port}"
    if announce:
        assert data_dir is not None
        with contextlib.suppress(OSError):  # a courtesy for `imgsync search`: a full disk must not stop the start
            _announce_serving(data_dir, url)
    return RunningGallery(
        url=url,
        api_key=keys[0][0],
        secret_key=keys[0][1],
        data_dir=data_dir,
        created_key=created,
        libraries=tuple(sorted(enabled)) if enabled is not None else None,
        store=store.describe(),
        _stop=stop,
    )


SERVING_FILE = "serving.json"


def serving_url(data_dir: Path) -> str | None:
    """The URL a process serving `data_dir` with its own key (server-key.json) listens on, if any: how
    `imgsync search` reaches the gallery `imgsync watch` holds. (Stale after a kill -9; callers must
    expect the URL not to answer.)"""
    try:
        return str(json.loads((Path(data_dir) / SERVING_FILE).read_text(encoding="utf-8"))["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _announce_serving(data_dir: Path, url: str) -> None:
    tmp = data_dir / (SERVING_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": url, "pid": os.getpid()}, f)
    os.replace(tmp, data_dir / SERVING_FILE)


def _forget_serving(data_dir: Path, url: str) -> None:
    if serving_url(data_dir) == url:
        (data_dir / SERVING_FILE).unlink(missing_ok=True)


def _pull(server: Any, thunk: Callable[[], None]) -> None:
    """Run `thunk` in the server's loop. If the wake-up pipe is already gone (EBADF: seen rarely when
    several servers start and stop in one process), the loop is ending anyway: run it here instead."""
    try:
        server.trigger.pull_trigger(thunk)
    except OSError:
        log.debug("local gallery wake-up pipe already closed; closing from this thread")
        try:
            thunk()
        except OSError:
            pass


def serve_forever(data_dir: Path | str | None = None, *, echo: Callable[[str], None] = print, **options: Any) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (the CLI's `imgsync gallery serve`).

    Prints the URL and, only when this start created the key, the key and secret: the operator needs
    them and has no other way to learn them.
    """
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        running = start_in_thread(data_dir, **options)
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    where = running.data_dir if running.data_dir is not None else "the database"
    try:
        # "(data: DIR)" for a data dir (scripts and tests read the dir from this first line).
        echo(
            f"local gallery serving at {running.url} "
            + (f"(data: {running.data_dir})" if running.data_dir is not None else f"({running.store})")
        )
        if running.libraries is not None:
            echo(f"libraries enabled: {', '.join(running.libraries)} (the others answer 216017 not initialized)")
        if running.created_key:
            echo(f"created API key: {running.api_key}")
            echo(f"secret key: {running.secret_key}")
            echo(
                f"(saved in {where if running.data_dir is None else running.data_dir / 'server-key.json'}; "
                "reused on the next start)"
            )
        elif not options.get("keys"):
            echo(
                f"API key: {running.api_key} (secret in "
                f"{where if running.data_dir is None else running.data_dir / 'server-key.json'})"
            )
        while not done.wait(0.5):
            pass
    finally:
        running.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        echo("local gallery stopped")
