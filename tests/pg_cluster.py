"""A private PostgreSQL server for the tests: initdb in a temp dir, owned by a non-root user, listening
on a free loopback port and a socket in that dir; started, stopped, restarted and removed on demand.

    python tests/pg_cluster.py start DIR   → prints the server's URL (CI: .ci/run)
    python tests/pg_cluster.py stop DIR    → stops it and removes DIR

The PostgreSQL server refuses to run as root, so as root (CI) the server runs as the `postgres` user
when there is one, else as a system user `imgsync-pgtest` made for it; setpriv switches to it. The
cluster is tuned for tests (fsync off: a crash of the machine may lose it, a crash of the server may
not), which changes nothing the gallery can observe.

Binaries: pg_ctl/initdb on PATH, else the newest /usr/lib/postgresql/*/bin (Debian's layout).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

SERVICE_USER = "imgsync-pgtest"


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server can be started here (why is in the message)."""


def find_bin_dir() -> Path:
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0,
    )
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    raise ClusterUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin:"
        " install PostgreSQL (apt-get install postgresql)"
    )


def _run_as() -> tuple[list[str], int | None, int | None]:
    """(command prefix, uid, gid) that runs the server as a non-root user."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        try:
            user = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                check=True,
                capture_output=True,
            )
            user = pwd.getpwnam(SERVICE_USER)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise ClusterUnavailable("running as root, and setpriv (util-linux) is missing to drop to a non-root user")
    prefix = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    return prefix, user.pw_uid, user.pw_gid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One server. `url` (database `postgres`), `url_for(db)`, `create_database()`, stop/start/restart."""

    def __init__(self, root: Path, port: int, bin_dir: Path, prefix: Sequence[str]) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.port = port
        self.bin_dir = bin_dir
        self._prefix = list(prefix)
        self._n = 0

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://imgsync@127.0.0.1:{self.port}/{database}"

    def _pg(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        return subprocess.run(
            [*self._prefix, str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd="/",
        )

    def initdb(self) -> None:
        r = self._pg(
            "initdb", "-D", str(self.data), "-U", "imgsync", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C"
        )
        if r.returncode:
            raise ClusterUnavailable(f"initdb failed: {r.stderr.strip() or r.stdout.strip()}")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\nmax_connections = 200\n"
                "shared_buffers = 64MB\nlog_min_messages = warning\n"
            )

    def start(self) -> None:
        r = self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
        if r.returncode:
            raise ClusterUnavailable(f"pg_ctl start failed: {r.stderr.strip() or r.stdout.strip()}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        return self._pg("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "".join((self.root / "server.log").read_text(errors="replace").splitlines(True)[-n:])
        return ""

    def psql(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url_for(database), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (optionally a copy of `template`); its URL."""
        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        self.psql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return self.url_for(name)

    def remove(self) -> None:
        if self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(root: Path | None = None) -> Cluster:
    """initdb + start a new server in `root` (default: a new temp dir). ClusterUnavailable if it cannot."""
    bin_dir = find_bin_dir()
    prefix, uid, gid = _run_as()
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as another user.
    root = Path(tempfile.mkdtemp(prefix="imgsync-pg-")) if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    (root / "sock").mkdir(exist_ok=True)
    if uid is not None:
        for p in (root, root / "sock"):
            os.chown(p, uid, gid or -1)
    for attempt in range(3):  # a free port can be taken between the probe and the start
        cluster = Cluster(root, free_port(), bin_dir, prefix)
        if not (cluster.data / "PG_VERSION").exists():
            cluster.initdb()
        else:
            _set_port(cluster)
        try:
            cluster.start()
            return cluster
        except ClusterUnavailable:
            if attempt == 2:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def _set_port(cluster: Cluster) -> None:
    conf = cluster.data / "postgresql.conf"
    lines = [ln for ln in conf.read_text().splitlines() if not ln.startswith("port = ")]
    conf.write_text("\n".join(lines) + f"\nport = {cluster.port}\n")


def attach(root: Path) -> Cluster:
    """The cluster `start` left in `root` (its port is in the config)."""
    port = 0
    for line in (root / "data" / "postgresql.conf").read_text().splitlines():
        if line.startswith("port = "):
            port = int(line.split("=")[1])
    prefix, _, _ = _run_as()
    return Cluster(root, port, find_bin_dir(), prefix)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    if argv[0] == "start":
        try:
            cluster = start_cluster(root)
        except ClusterUnavailable as e:
            print(f"pg_cluster: {e}", file=sys.stderr)
            return 1
        print(cluster.url)
        return 0
    attach(root).remove()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
