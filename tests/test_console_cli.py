"""`imgsync ui` and `imgsync watch --ui` as processes: the URL with its token, the warning for a host
beyond loopback, a port that is taken, and "Sync now" asking a running daemon for a full sync."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests
from click.testing import CliRunner

from conftest import wait_until
from consoletools import EXAMPLES, catalogue
from imgsync.cli import cli

URL = re.compile(r"(http://[^\s/]+)/\?token=([A-Za-z0-9_-]+)")


def _env(setup) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSYNC_")}
    env.update(IMGSYNC_CONFIG=str(setup.config), IMGSYNC_STATE_DIR=str(setup.state))
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return env


class Lines:
    """A process's stream, read in a thread: wait for a line that matches."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def close(self) -> None:
        """After the process ended: the rest of its output, and the pipe closed."""
        self._thread.join(timeout=60)
        self._stream.close()

    def wait_for(self, pattern: re.Pattern[str], what: str) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = [m for m in map(pattern.search, list(self.lines)) if m]
            return bool(found)

        wait_until(seen, timeout=120, what=what)
        return found[0]

    @property
    def text(self) -> str:
        return "".join(self.lines)


class Process:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imgsync", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.out, self.err = Lines(self.proc.stdout), Lines(self.proc.stderr)

    def stop(self) -> int:
        """SIGTERM, then its exit code (its output read to the end)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.out.close()
        self.err.close()
        return code


def first_hit(session: requests.Session, base: str) -> list[str]:
    """The local files of the best hit for the README's query (examples/query.jpg), searched from the console."""
    search = session.post(
        base + "/api/search?in=mirror:catalogue",
        data=(EXAMPLES / "query.jpg").read_bytes(),
        headers={"Origin": base, "Content-Type": "image/jpeg"},
        timeout=120,
    )
    return search.json()["hits"][0]["paths"]


def test_ui_prints_its_url_with_a_token_serves_the_mirror_and_stops_on_sigterm(tmp_path: Path) -> None:
    setup = catalogue(tmp_path)
    proc = Process(["ui", "--port", "0"], _env(setup))  # no --no-browser: there is no display
    try:
        match = proc.out.wait_for(URL, "the console's URL")
        base, token = match.group(1), match.group(2)
        assert base.startswith("http://127.0.0.1:") and len(token) >= 32
        assert requests.get(base + "/", timeout=60).status_code == 401
        session = requests.Session()
        page = session.get(match.group(0), timeout=60)
        assert page.status_code == 200 and 'data-mirror="catalogue"' in page.text
        assert first_hit(session, base) == [str(setup.folder / "boat.jpg")]
    finally:
        code = proc.stop()
    assert code == 0, proc.err.text
    assert "no browser opened: no display" in proc.err.text
    assert "Warning" not in proc.err.text and "Traceback" not in proc.err.text


def test_a_host_beyond_loopback_is_served_with_a_warning(tmp_path: Path) -> None:
    setup = catalogue(tmp_path, extra=False)
    proc = Process(["ui", "--host", "0.0.0.0", "--port", "0", "--no-browser"], _env(setup))
    try:
        match = proc.out.wait_for(URL, "the console's URL")
        port = match.group(1).rsplit(":", 1)[1]
        session = requests.Session()
        assert session.get(f"http://127.0.0.1:{port}/?token={match.group(2)}", timeout=60).status_code == 200
    finally:
        proc.stop()
    assert "Warning: --host 0.0.0.0 serves the console beyond this machine" in proc.err.text


def test_a_taken_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    setup = catalogue(tmp_path, extra=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = set(threading.enumerate())
        result = CliRunner().invoke(cli, ["ui", "--port", str(port), "--no-browser"], env=_env(setup))
    assert result.exit_code == 1
    assert f"cannot serve the console on 127.0.0.1 (port {port})" in result.stderr
    assert result.stderr.count("\n") == 1
    # waitress starts its workers before it binds: a refused port must not leave them running
    wait_until(lambda: set(threading.enumerate()) <= before, what="no thread left behind by the refused port")


def test_a_bad_config_is_exit_2_before_anything_is_served(tmp_path: Path) -> None:
    setup = catalogue(tmp_path, extra=False)
    setup.config.write_text("[gallery]\nendpoit = 'x'\n")
    result = CliRunner().invoke(cli, ["ui", "--port", "0", "--no-browser"], env=_env(setup))
    assert result.exit_code == 2 and "endpoint" in result.stderr


def test_watch_ui_serves_the_console_and_sync_now_asks_the_daemon(tmp_path: Path) -> None:
    setup = catalogue(tmp_path, extra=False)
    proc = Process(["watch", "--ui", "--ui-port", "0"], _env(setup))
    try:
        match = proc.err.wait_for(URL, "the console's URL in the daemon's log")
        base = match.group(1)
        session = requests.Session()
        assert session.get(match.group(0), timeout=60).status_code == 200
        page = session.get(base + "/", timeout=60).text
        assert "served by <code>imgsync watch</code>" in page

        def watching() -> bool:
            status = session.get(base + "/api/status", timeout=60).json()
            return (status["mirrors"][0]["daemon"] or {}).get("state") == "watching"

        wait_until(watching, timeout=120, what="the daemon to watch the catalogue")
        job = session.post(base + "/api/sync", json={"mirror": "catalogue"}, headers={"Origin": base}, timeout=60)
        assert job.status_code == 202 and job.json()["state"] == "asked"

        def scanned_on_request() -> bool:
            status = session.get(base + "/api/status", timeout=60).json()
            last = (status["mirrors"][0]["daemon"] or {}).get("last") or ""
            return last.startswith("full scan (asked for from the web console)")

        wait_until(scanned_on_request, timeout=120, what="the daemon's full scan asked for by the console")
        # Search from the console reaches the gallery the daemon holds.
        assert first_hit(session, base) == [str(setup.folder / "boat.jpg")]
    finally:
        code = proc.stop()
    assert code == 0, proc.err.text
