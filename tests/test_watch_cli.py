"""`imgsync watch` as a process: systemd's notify protocol on a socket the test listens on, SIGHUP,
SIGTERM, the status it leaves for `imgsync status`, and `imgsync service install`.

This machine has systemctl but no usable bus, so the shipped unit is checked by running its own
ExecStart= line under the notify protocol (what systemd would do), and by `systemd-analyze verify`
when that works here."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from click.testing import CliRunner

from conftest import make_image, wait_until
from imgsync.cli import cli
from imgsync.watch.notify import Notifier, socket_address
from imgsync.watch.service import render_unit
from imgsync.watch.statusfile import read_status


class NotifyListener:
    """What systemd does: a datagram socket named by $NOTIFY_SOCKET; collects the messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(socket_address(name))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []

    def poll(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def seen(self, key: str, value: str | None = None) -> bool:
        self.poll()
        return any(key in m and (value is None or m[key] == value) for m in self.messages)

    def close(self) -> None:
        self.sock.close()
        if not self.name.startswith("@"):
            Path(self.name).unlink(missing_ok=True)


def write_config(path: Path, server, folders: dict[str, Path], state: Path) -> None:
    text = (
        f'state_dir = "{state}"\n[gallery]\nendpoint = "{server.url}"\napi_key = "{server.api_key}"\n'
        f'secret_key = "{server.secret_key}"\n[watch]\ndebounce = 0.3\nmin_age = 0.3\n'
    )
    for name, folder in folders.items():
        text += f'[[mirror]]\nname = "{name}"\nfolder = "{folder}"\n'
    path.write_text(text)
    path.chmod(0o600)


def test_unit_runs_under_the_notify_protocol_reloads_on_hup_and_stops_on_term(tmp_path, gallery_server):
    a, b, state = tmp_path / "a", tmp_path / "b", tmp_path / "state"
    a.mkdir()
    b.mkdir()
    config = tmp_path / "config.toml"
    write_config(config, gallery_server, {"a": a}, state)
    unit = render_unit(python=sys.executable, config=config, state_dir=state)
    (exec_line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_line.removeprefix("ExecStart="))
    listener = NotifyListener(f"@imgsync-test-{uuid.uuid4().hex}")  # abstract namespace, as systemd uses
    env = {
        **os.environ,
        "NOTIFY_SOCKET": listener.name,
        "WATCHDOG_USEC": "1000000",
        "JOURNAL_STREAM": "8:1234",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: listener.seen("READY", "1"), what="READY=1")
        assert any("STATUS" in m and "watched" in m["STATUS"] for m in listener.messages)
        wait_until(lambda: listener.seen("WATCHDOG", "1"), what="WATCHDOG=1 pings")
        (a / "x.jpg").write_bytes(make_image(1))
        wait_until(
            lambda: (
                (read_status(state) or {}).get("mirrors", {}).get("a", {}).get("last_run", {})
                and read_status(state)["mirrors"]["a"]["last_run"].get("added") == 1
            ),
            what="the drop to be added",
        )
        status = CliRunner().invoke(cli, ["--config", str(config), "status"], catch_exceptions=False)
        assert "daemon: running since" in status.output and f"pid {proc.pid}" in status.output

        write_config(config, gallery_server, {"a": a, "b": b}, state)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "b" in (read_status(state) or {}).get("mirrors", {}), what="the reload")
        assert listener.seen("RELOADING", "1")

        config.write_text("this is [not toml")  # a broken config on HUP: logged, the old one kept
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: "config not reloaded" in ((read_status(state) or {}).get("last_error") or ""),
            what="the refused reload",
        )
        assert proc.poll() is None

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=12) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read()
        proc.stderr.close()
        stopping = listener.seen("STOPPING", "1")
        listener.close()
    assert stopping
    assert read_status(state)["running"] is False
    assert gallery_server.secret_key not in stderr  # secrets never logged
    assert "<6>imgsync.watch: watching" in stderr  # journal priority prefixes under systemd


def test_a_second_daemon_on_the_same_state_dir_gets_exit_7(tmp_path):
    from imgsync.manifest import StateLock

    folder = tmp_path / "pics"
    folder.mkdir()
    with StateLock(tmp_path / "state"):
        result = CliRunner().invoke(cli, ["--state-dir", str(tmp_path / "state"), "watch", str(folder)])
    assert result.exit_code == 7 and "holds" in result.output


def test_a_config_error_exits_2_so_systemd_does_not_restart_it(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[watch]\ndebounce = "soon"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "watch"])
    assert result.exit_code == 2 and "watch.debounce" in result.output
    assert "RestartPreventExitStatus=2 8" in render_unit()


def test_notify_without_a_socket_is_a_no_op_and_watchdog_pid_is_respected():
    assert not Notifier.from_environ({}).send(ready=1)
    n = Notifier.from_environ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, pid=2)
    assert n.watchdog_interval is None
    n = Notifier.from_environ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000"}, pid=2)
    assert n.watchdog_interval == 2.0


def test_notify_to_a_path_socket(tmp_path):
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    try:
        n = Notifier.from_environ({"NOTIFY_SOCKET": listener.name})
        assert n.ready("watching 1 mirror\nsecond line")
        assert listener.seen("READY", "1") and listener.messages[0]["STATUS"] == "watching 1 mirror second line"
        n.close()
    finally:
        listener.close()


def test_service_install_writes_the_user_unit_and_says_how_to_enable_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("IMGSYNC_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    state = tmp_path / "my state"
    nothing = CliRunner().invoke(cli, ["--state-dir", str(state), "service", "install", "--user"])
    assert nothing.exit_code == 2 and "no mirror to watch" in nothing.output  # not a unit that watches nothing
    folder = tmp_path / "My Pictures"
    folder.mkdir()
    first = CliRunner().invoke(cli, ["--state-dir", str(state), "reconcile", str(folder)], catch_exceptions=False)
    assert first.exit_code == 0 and "remembered as mirror 'My_Pictures'" in first.output
    # The state dir from the environment reaches the unit too (the service would not have that variable).
    monkeypatch.setenv("IMGSYNC_STATE_DIR", str(state))
    result = CliRunner().invoke(cli, ["service", "install", "--user"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    unit = tmp_path / "xdg" / "systemd" / "user" / "imgsync.service"
    text = unit.read_text()
    assert "Type=notify" in text and "Restart=on-failure" in text and "WatchdogSec=" in text
    assert f'--state-dir "{state}" watch' in text  # a path with a space is quoted for systemd
    assert "systemctl --user enable --now imgsync.service" in result.output
    assert f"it watches: My_Pictures ({folder})" in result.output
    again = CliRunner().invoke(cli, ["--state-dir", str(state), "service", "install", "My_Pictures"])
    assert again.exit_code == 1 and "--force" in again.output
    assert unit.read_text() == text  # not replaced without --force
    if shutil.which("systemd-analyze"):  # offline syntax check (needs no running systemd or bus)
        verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert verify.returncode == 0 and "imgsync.service" not in verify.stderr, verify.stderr


def test_status_says_when_the_daemon_is_not_running(tmp_path):
    state = tmp_path / "state"
    out = CliRunner().invoke(cli, ["--state-dir", str(state), "status"], catch_exceptions=False).output
    assert "daemon: not running" in out
    state.mkdir()
    (state / "daemon.json").write_text(json.dumps({"pid": 999999999, "running": True, "queue": 3}))
    out = CliRunner().invoke(cli, ["--state-dir", str(state), "status"], catch_exceptions=False).output
    assert "did not stop cleanly" in out
