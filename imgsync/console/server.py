"""Serving the console: waitress in a thread (`imgsync watch --ui`, tests) or in the foreground
(`imgsync ui`, until Ctrl-C or SIGTERM), with its URL and token printed as Jupyter does.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from imgsync.console.auth import Guard, is_loopback, new_token
from imgsync.errors import ImgsyncError
from imgsync.serving import quiet_queue_warnings

if TYPE_CHECKING:
    from imgsync.api import Imgsync

log = logging.getLogger("imgsync.console")

#: `imgsync ui` listens here by default, or on the next free port of the few after it.
DEFAULT_PORT = 8809
PORTS_TRIED = 10
#: The console's files in the state dir (thumbnails).
CONSOLE_DIR = "console"
THREADS = 6


@dataclass
class RunningConsole:
    url: str
    token: str = field(repr=False)
    _stop: Callable[[], None] = field(default=lambda: None, repr=False)

    @property
    def login_url(self) -> str:
        """The URL to open: it carries the token once; the console then keeps it in a cookie."""
        return f"{self.url}/?token={self.token}"

    def stop(self) -> None:
        self._stop()


def exposure_warning(host: str) -> str | None:
    """What to tell someone who serves the console beyond this machine."""
    if is_loopback(host):
        return None
    return (
        f"Warning: --host {host} serves the console beyond this machine, over plain HTTP: anyone who can see "
        f"the URL's token (on the network, in a shared terminal) can see your pictures, start syncs and delete "
        f"gallery entries. Prefer the default (127.0.0.1) and an SSH tunnel."
    )


def start_console(
    opener: Callable[[], Imgsync],
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    request_full_scan: Callable[[str, str], None] | None = None,
    threads: int = THREADS,
) -> RunningConsole:
    """Serve the console on a daemon thread; returns once it listens. port None: DEFAULT_PORT or the next
    free one; 0: any free port. request_full_scan: the daemon's, when `imgsync watch` serves it."""
    from waitress import wasyncore
    from waitress.server import create_server
    from waitress.task import ThreadedTaskDispatcher

    from imgsync.console.app import Console, ConsoleApp, Reopened
    from imgsync.console.jobs import DaemonJobs, Jobs
    from imgsync.console.routes import ROUTES
    from imgsync.console.thumbs import ThumbCache

    host = str(socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0][4][0])
    candidates = [port] if port is not None else list(range(DEFAULT_PORT, DEFAULT_PORT + PORTS_TRIED))
    opener = Reopened(opener)
    token = new_token()
    jobs: Jobs | DaemonJobs = DaemonJobs(request_full_scan) if request_full_scan else Jobs(opener)
    socket_map: dict[int, Any] = {}
    server: Any = None
    app: Any = None  # made below, once the port is known; the lambda reads it per request
    quiet_queue_warnings()
    # Our own dispatcher: waitress starts its worker threads before it binds, and each failed bind
    # would leave a set of them running for the life of the process.
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    for i, candidate in enumerate(candidates):
        try:
            # The app is made once the port is known (the guard checks Host against it); no request is
            # served before the thread below starts.
            server = create_server(
                lambda environ, start_response: app(environ, start_response),
                map=socket_map,
                _dispatcher=dispatcher,
                host=host,
                port=candidate,
                threads=threads,
                ident="imgsync-console",
                clear_untrusted_proxy_headers=True,
                max_request_body_size=64 * 1024 * 1024,
            )
            break
        except OSError as e:
            wasyncore.close_all(socket_map, ignore_all=True)
            if i == len(candidates) - 1:
                dispatcher.shutdown(timeout=5)
                tried = f"ports {candidates[0]}-{candidates[-1]}" if len(candidates) > 1 else f"port {candidate}"
                raise ImgsyncError(f"cannot serve the console on {host} ({tried}): {e.strerror or e}") from None
    assert server is not None
    bound = int(server.effective_port)
    guard = Guard(token, bound, loopback=is_loopback(host))
    cache_dir = Path(state_dir) / CONSOLE_DIR / "thumbs"
    app = ConsoleApp(
        Console(opener, guard, ThumbCache(cache_dir), jobs, in_daemon=request_full_scan is not None), ROUTES
    )
    thread = threading.Thread(target=server.run, name="console-http", daemon=True)
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if stopped.is_set():
            return
        stopped.set()
        jobs.stop()
        # From inside the server's loop (closing its sockets from here would race with it): stop
        # accepting, let the requests in progress finish, close every connection; the loop then ends.
        _in_loop(server, lambda: wasyncore.dispatcher.close(server))
        server.task_dispatcher.shutdown(timeout=5)
        _in_loop(server, lambda: wasyncore.close_all(server._map, ignore_all=True))
        thread.join(timeout=10)

    shown = f"[{host}]" if ":" in host else host
    return RunningConsole(f"http://{shown}:{bound}", token, stop)


def _in_loop(server: Any, thunk: Callable[[], None]) -> None:
    try:
        server.trigger.pull_trigger(thunk)
    except OSError:  # the wake-up pipe is gone: the loop is ending anyway
        try:
            thunk()
        except OSError:
            pass


def serve_forever(
    opener: Callable[[], Imgsync],
    state_dir: Path,
    *,
    host: str,
    port: int | None,
    browser: bool,
    echo: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    """`imgsync ui`: serve until SIGINT or SIGTERM; print the URL; open a browser if asked and possible."""
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        running = start_console(opener, state_dir, host=host, port=port)
        try:
            note = exposure_warning(host)
            if note:
                warn(note)
            echo(f"imgsync console: {running.login_url}")
            warn("(Ctrl-C stops it; the token in that URL is needed once per browser, then kept in a cookie)")
            if browser:
                reason = open_browser(running.login_url)
                if reason:
                    warn(f"(no browser opened: {reason}; open the URL above)")
            while not done.wait(0.5):
                pass
        finally:
            running.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def open_browser(url: str) -> str | None:
    """Open `url` in the desktop's browser, in the background; why not, or None. Without a display a
    text browser (lynx, w3m) would take over this terminal, so none is tried."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display"
    threading.Thread(target=webbrowser.open, args=(url,), name="console-browser", daemon=True).start()
    return None
