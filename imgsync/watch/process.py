"""`imgsync watch` as a process: logging fit for journald, signals, systemd's watchdog, the stop deadline.

The loop itself is imgsync.watch.daemon.Daemon (set up by imgsync.api.Imgsync.watcher); this module runs
it the way a service must. The loop runs in a worker thread so that the main thread can take signals at
once, ping systemd's watchdog and enforce the stop deadline: SIGTERM/SIGINT end the loop after the call in
flight; if a long step (a big scan, a slow call) does not end within STOP_GRACE seconds, the process
exits anyway (exit 0) and the journal finishes that call on the next start, as after a kill -9.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

log = logging.getLogger("imgsync.watch")

#: Seconds between SIGTERM and exiting even if the loop is still inside a step (systemd's default
#: TimeoutStopSec is 90 s; the issue asks for 10).
STOP_GRACE = 8.0
#: A loop that has not moved for this long gets no more WATCHDOG=1 pings (systemd then restarts it).
#: Generous: a first full scan of a big folder hashes every file and reports no progress meanwhile.
STALL_LIMIT = 1800.0

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    """ "<N>name: message": journald reads the <N> prefix as the syslog priority and adds its own time."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def configure_logging(env: Any = None) -> None:
    """stderr with levels: journal-style under systemd ($JOURNAL_STREAM), timestamped otherwise.
    At least INFO (a daemon should say what it does); -vv on the root command gives DEBUG."""
    env = os.environ if env is None else env
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    if env.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(min(root.level or logging.WARNING, logging.INFO))
    # watchdog logs its own overflow warning; ours says what happens next. Alembic announces its plugins
    # at INFO on import: not news for a service's log.
    logging.getLogger("watchdog").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def serve(daemon: Any, notifier: Any) -> int:
    """Run the loop in a worker thread; the main thread takes signals, pings systemd, enforces the
    stop deadline. Returns the exit code."""
    crashed: list[BaseException] = []

    def work() -> None:
        try:
            daemon.run()
        except BaseException as e:  # noqa: BLE001 - reported below, the process exits 1
            crashed.append(e)
            log.critical("the watch loop failed: %s: %s", type(e).__name__, e, exc_info=e)

    def on_stop(signum: int, frame: Any) -> None:
        if not daemon.stopping:
            log.info("%s: finishing the call in flight, then exiting", signal.Signals(signum).name)
        daemon.stop()

    def on_hup(signum: int, frame: Any) -> None:
        log.info("SIGHUP: reloading the config")
        daemon.request_reload()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    worker = threading.Thread(target=work, name="imgsync-watch", daemon=True)
    worker.start()
    ping = notifier.watchdog_interval
    next_ping = 0.0
    stop_deadline: float | None = None
    while worker.is_alive():
        worker.join(timeout=min(0.5, ping or 0.5))
        now = time.monotonic()
        if ping and now >= next_ping and daemon.heartbeat > now - STALL_LIMIT:
            notifier.watchdog()
            next_ping = now + ping
        if daemon.stopping:
            stop_deadline = stop_deadline or now + STOP_GRACE
            if now >= stop_deadline and worker.is_alive():
                log.warning(
                    "still busy after %.0f s; exiting now: what was in flight is journaled and "
                    "finished at the next start",
                    STOP_GRACE,
                )
                logging.shutdown()
                os._exit(0)
    return 1 if crashed else 0
