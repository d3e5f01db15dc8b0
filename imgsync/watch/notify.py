"""systemd's notify protocol (sd_notify(3)), written by hand: one datagram per message, no dependency.

$NOTIFY_SOCKET names an AF_UNIX datagram socket: a path, or an abstract-namespace name when it
starts with "@" (the "@" stands for the leading NUL byte). Messages are newline-separated
KEY=VALUE lines: READY=1 once watching, STATUS=<one line>, WATCHDOG=1 every half of WatchdogSec
($WATCHDOG_USEC, meant for us only if $WATCHDOG_PID is unset or our pid), RELOADING=1 / READY=1
around a config reload, STOPPING=1 on the way out. Without $NOTIFY_SOCKET every call is a no-op, and a
send that fails is logged once and otherwise ignored: systemd being away must never stop the daemon.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("imgsync.watch")


def socket_address(value: str) -> str | bytes:
    """$NOTIFY_SOCKET as a socket address: "@name" is the abstract name "\\0name"."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not (address.startswith("/") or address.startswith("@")):
            log.warning("ignoring NOTIFY_SOCKET=%r: not a path or an abstract socket name", address)
            address = None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "")
        owner = env.get("WATCHDOG_PID", "")
        if raw.isdigit() and int(raw) > 0 and (not owner or owner == str(pid)):
            usec = int(raw)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the timeout, as sd_watchdog_enabled(3) advises)."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields: str | int) -> bool:
        if self.address is None:
            return False
        text = "\n".join(f"{k.upper()}={_one_line(str(v))}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode(), socket_address(self.address))
            return True
        except OSError as e:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self.address, e.strerror or e)
                self._warned = True
            return False

    def ready(self, status: str) -> bool:
        return self.send(ready=1, status=status)

    def status(self, status: str) -> bool:
        return self.send(status=status)

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def reloading(self) -> bool:
        return self.send(reloading=1)

    def stopping(self, status: str) -> bool:
        return self.send(stopping=1, status=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())
