"""The systemd unit that ships inside the package, rendered for this installation.

The template (imgsync.service, next to this module) names the command to run in `{exec_start}`:
the interpreter running imgsync now and `-m imgsync watch`, so the service runs the same install
(a venv, pipx, the system) as the shell that installed it. --config / --state-dir given at install
time are passed on; secrets are never written into the unit (systemd units are world-readable):
keys stay in the config file or an EnvironmentFile the user creates.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

UNIT_NAME = "imgsync.service"


def unit_template() -> str:
    return resources.files("imgsync.watch").joinpath(UNIT_NAME).read_text(encoding="utf-8")


def exec_start(python: str, config: Path | None, state_dir: Path | None, mirrors: Sequence[str] = ()) -> str:
    """The ExecStart= line: absolute paths, each argument quoted for systemd (which follows shell
    quoting rules for "..." and escapes; a '%' must be doubled, '$' too)."""
    argv = [python, "-m", "imgsync"]
    if config is not None:
        argv += ["--config", str(Path(config).expanduser().resolve())]
    if state_dir is not None:
        argv += ["--state-dir", str(Path(state_dir).expanduser().resolve())]
    argv += ["watch", *mirrors]
    return " ".join(_systemd_quote(a) for a in argv)


def _systemd_quote(arg: str) -> str:
    """systemd splits ExecStart= on whitespace and honours "..." with C escapes; it expands % and $."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(
    *,
    python: str | None = None,
    config: Path | None = None,
    state_dir: Path | None = None,
    mirrors: Sequence[str] = (),
    environment_file: Path | None = None,
    run_as: str | None = None,
) -> str:
    """The unit text. run_as: a system unit's User= (a user unit runs as its user already)."""
    env = ""
    if environment_file is not None:
        # '-': a missing file is not an error (keys may live in the config instead).
        env = f"EnvironmentFile=-{Path(environment_file).expanduser()}"
    text = unit_template()
    text = text.replace("{exec_start}", exec_start(python or sys.executable, config, state_dir, mirrors))
    text = text.replace("{environment}\n", env + "\n" if env else "")
    if run_as is not None:
        text = text.replace("[Service]\n", f"[Service]\nUser={run_as}\n", 1)
        text = text.replace("WantedBy=default.target", "WantedBy=multi-user.target")
    return text


@dataclass(frozen=True, slots=True)
class Target:
    path: Path
    user: bool

    def commands(self) -> list[str]:
        ctl = "systemctl --user" if self.user else "sudo systemctl"
        out = [
            f"{ctl} daemon-reload",
            f"{ctl} enable --now {UNIT_NAME}",
            f"{ctl} status {UNIT_NAME}",
            f"journalctl {'--user ' if self.user else ''}-u {UNIT_NAME} -f",
        ]
        if self.user:
            out.append("loginctl enable-linger $USER   # optional: keep it running when you are logged out")
        return out


def unit_path(user: bool, env: Mapping[str, str] | None = None) -> Target:
    """~/.config/systemd/user/imgsync.service (--user) or /etc/systemd/system/imgsync.service."""
    env = os.environ if env is None else env
    if user:
        base = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME", "~")) / ".config").expanduser()
        return Target(base / "systemd" / "user" / UNIT_NAME, True)
    return Target(Path("/etc/systemd/system") / UNIT_NAME, False)


def write_unit(target: Target, text: str, *, force: bool) -> bool:
    """Write the unit atomically; False (nothing written) if one is there with other text and not force."""
    if target.path.exists():
        if target.path.read_text(encoding="utf-8") == text:
            return True
        if not force:
            return False
    target.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.path.with_name(f".{UNIT_NAME}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, target.path)
    return True
