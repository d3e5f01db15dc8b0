"""Shared fixtures: a real local gallery over HTTP on 127.0.0.1, real images made with Pillow.

No mocks of imgsync's own parts: tests talk to the real server, a real SQLite file and a real
filesystem in a temp dir. This file is also loaded by tests/light, in a venv with `pip install .` only:
nothing but the standard library, pytest and Pillow at the top.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

# Tests use benchmarks.photos (real photos shipped in wheels) and benchmarks.variants. The repo root goes
# at the *end* of sys.path: an installed imgsync (CI installs the wheel) still wins over the checkout's.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No IMGSYNC_* setting from the developer's shell leaks into a test (httpx's clean_environ)."""
    for key in list(os.environ):
        if key.startswith("IMGSYNC_"):
            monkeypatch.delenv(key, raising=False)


def make_image(
    seed: int,
    size: tuple[int, int] = (320, 240),
    fmt: str = "JPEG",
    *,
    mode: str = "RGB",
    quality: int = 90,
) -> bytes:
    """A real, distinct picture for `seed`: smooth colour blobs plus edges, so every visual
    descriptor (hashes, histograms, keypoints) sees a different image for each seed."""
    import numpy as np  # here, not at the top: tests/light runs in a venv without numpy

    rng = np.random.default_rng(seed)
    w, h = size
    # A low-resolution random field, upscaled smoothly, gives large-scale structure that
    # survives resizing and re-compression; a few rectangles add edges and corners.
    base = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(base, "RGB").resize((w, h), Image.Resampling.BICUBIC)
    px = np.asarray(img).copy()
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        x1, y1 = int(rng.integers(x0 + 4, min(w, x0 + w // 3) + 5)), int(rng.integers(y0 + 4, min(h, y0 + h // 3) + 5))
        px[y0:y1, x0:x1] = rng.integers(0, 256, size=3, dtype=np.uint8)
    noise = rng.normal(0, 6, size=px.shape)
    px = np.clip(px.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    out = Image.fromarray(px, "RGB").convert(mode)
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    out.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def image_factory():
    return make_image


@pytest.fixture
def gallery_server(tmp_path: Path) -> Iterator[object]:
    """A fresh local gallery on an ephemeral loopback port, with one known key.

    Yields imgsync.localgallery.server.RunningGallery (url, api_key, secret_key, data_dir, stop()).
    Loopback URL fetching is allowed so tests can serve images to `url=` inputs.
    """
    from imgsync.localgallery.server import start_in_thread

    running = start_in_thread(
        tmp_path / "gallery-data",
        host="127.0.0.1",
        port=0,
        keys=[("test-ak", "test-sk")],
        allow_private_urls=True,
    )
    try:
        yield running
    finally:
        running.stop()


# --------------------------------------------------------------------------- targets: local gallery or the cloud
#
# Tests that take the `target` fixture run twice: against a fresh local gallery, and against Baidu's cloud
# (marked `live`). The live run needs, in the environment when pytest starts:
#   IMGSYNC_LIVE_API_KEY, IMGSYNC_LIVE_SECRET_KEY   an AI application's keys
#   IMGSYNC_LIVE_LIBRARIES                           libraries the account has created (default: same_hq)
#   IMGSYNC_LIVE_ENDPOINT                            default https://aip.baidubce.com
#   IMGSYNC_LIVE_QPS                                 client-side rate limit (default 2)
# and it runs only when asked for with `-m live` (credentials in a developer's shell are not enough).
# Every entry a live test adds is deleted in the fixture's teardown; briefs start with a per-run prefix.

import secrets  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

LIVE_DEFAULT_ENDPOINT = "https://aip.baidubce.com"
LIVE_NOT_SELECTED = (
    "live: talks to Baidu's cloud; runs only with `pytest -m live` "
    "and IMGSYNC_LIVE_API_KEY / IMGSYNC_LIVE_SECRET_KEY set"
)
LIVE_NO_CREDENTIALS = (
    "live: set IMGSYNC_LIVE_API_KEY and IMGSYNC_LIVE_SECRET_KEY (and IMGSYNC_LIVE_LIBRARIES, "
    "the libraries the account has) to run against the cloud"
)
#: One prefix per pytest run: every brief a live test writes starts with it (find leftovers by it).
RUN_PREFIX = f"imgsync-test-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}-"


@dataclass(frozen=True)
class LiveSettings:
    endpoint: str
    api_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    libraries: tuple[str, ...]
    qps: float


def live_settings(env: dict[str, str] | os._Environ[str]) -> LiveSettings | None:
    """The live target's settings from the environment, or None when the keys are not both set."""
    from imgsync.libraries import LIBRARIES

    ak, sk = env.get("IMGSYNC_LIVE_API_KEY", "").strip(), env.get("IMGSYNC_LIVE_SECRET_KEY", "").strip()
    if not ak or not sk:
        return None
    libraries = tuple(n.strip() for n in env.get("IMGSYNC_LIVE_LIBRARIES", "same_hq").split(",") if n.strip())
    unknown = [n for n in libraries if n not in LIBRARIES]
    if unknown:
        raise pytest.UsageError(
            f"IMGSYNC_LIVE_LIBRARIES: unknown library {unknown[0]!r} (known: {', '.join(LIBRARIES)})"
        )
    return LiveSettings(
        env.get("IMGSYNC_LIVE_ENDPOINT", LIVE_DEFAULT_ENDPOINT).strip(),
        ak,
        sk,
        libraries,
        float(env.get("IMGSYNC_LIVE_QPS", "2")),
    )


_LIVE_KEY = pytest.StashKey["LiveSettings | None"]()


def pytest_configure(config: pytest.Config) -> None:
    # Read now: the autouse _clean_environ fixture removes every IMGSYNC_* variable before each test.
    config.stash[_LIVE_KEY] = live_settings(os.environ)
    config.stash[_TEST_DATABASE_KEY] = os.environ.get(TEST_DATABASE_ENV) or None


def live_selected(markexpr: str) -> bool:
    """Does `-m EXPR` ask for live tests explicitly? It must select a test marked only `live` and not
    select a test with no marks (so `-m "not slow"` does not count)."""
    if not markexpr.strip():
        return False
    from _pytest.mark.expression import Expression

    expr = Expression.compile(markexpr)
    return expr.evaluate(lambda name, **kw: name == "live") and not expr.evaluate(lambda name, **kw: False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = live_selected(config.option.markexpr or "")
    settings = config.stash[_LIVE_KEY]
    for item in items:
        if item.get_closest_marker("live") is None:
            continue
        if not selected:
            item.add_marker(pytest.mark.skip(reason=LIVE_NOT_SELECTED))
        elif settings is None:
            item.add_marker(pytest.mark.skip(reason=LIVE_NO_CREDENTIALS))


@dataclass
class Target:
    """Where a contract test runs: `name` is "local" or "live"."""

    name: str
    url: str
    api_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    libraries: tuple[str, ...]
    qps: float | None
    #: Brief prefix for this run ("" locally, where the gallery is fresh).
    prefix: str
    #: Added to image seeds, so a live run never uploads a picture an earlier run may have left.
    seed_offset: int
    #: A tag (1..65535) for this run, so live searches can be filtered to this run's entries.
    tag: int
    local: object | None = None
    added: list[tuple[str, str]] = field(default_factory=list)
    #: Every address the gallery answers at (two replicas of a PostgreSQL gallery); default [url].
    urls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.urls = self.urls or [self.url]

    @property
    def is_local(self) -> bool:
        return self.name == "local"

    def need(self, library: str) -> str:
        if library not in self.libraries:
            pytest.skip(f"{self.name}: the {library} library is not enabled (IMGSYNC_LIVE_LIBRARIES)")
        return library

    def brief(self, text: str) -> str:
        return self.prefix + text

    def image(self, seed: int, size: tuple[int, int] = (320, 240), fmt: str = "JPEG", **kw: object) -> bytes:
        return make_image(seed + self.seed_offset, size, fmt, **kw)  # type: ignore[arg-type]

    def track(self, library: str, cont_sign: str) -> None:
        """Delete this entry at teardown (entries added through target.client() are tracked already)."""
        self.added.append((library, cont_sign))

    def client(self, session: object = None, **kw: object) -> object:
        from imgsync.gallery.client import GalleryClient

        target = self

        class TrackingClient(GalleryClient):
            """Records every entry it adds (only those: a duplicate's cont_sign may be someone else's)."""

            def add(self, library: str, **kwargs: object) -> str:  # type: ignore[override]
                cont_sign = super().add(library, **kwargs)  # type: ignore[arg-type]
                target.track(library, cont_sign)
                return cont_sign

        kw.setdefault("qps", self.qps)
        return TrackingClient(self.url, self.api_key, self.secret_key, session=session, **kw)  # type: ignore[arg-type]

    def cleanup(self) -> None:
        """Delete every tracked entry; an entry already gone is fine."""
        from imgsync.errors import GalleryNotFoundError
        from imgsync.gallery.client import GalleryClient

        by_library: dict[str, list[str]] = {}
        for library, cont_sign in self.added:
            by_library.setdefault(library, []).append(cont_sign)
        if not by_library:
            return
        with GalleryClient(self.url, self.api_key, self.secret_key, qps=self.qps) as client:
            for library, signs in by_library.items():
                for sign in dict.fromkeys(signs):  # one by one: a batch answers 216680 only if all are gone
                    try:
                        client.delete(library, cont_sign=sign)
                    except GalleryNotFoundError:
                        pass
        self.added.clear()


def _target(request: pytest.FixtureRequest, kind: str) -> Iterator[Target]:
    from imgsync.libraries import LIBRARIES

    replicas: list = []
    if kind == "local":
        server = request.getfixturevalue("gallery_server")
        t = Target(
            "local", server.url, server.api_key, server.secret_key, tuple(LIBRARIES), None, "", 0, 77, local=server
        )
    elif kind == "postgres":
        place = GalleryPlace("postgres", database=request.getfixturevalue("pg_database"))
        for _ in range(2):
            replicas.append(place.start(keys=[("test-ak", "test-sk")], allow_private_urls=True))
        t = Target(
            "local",
            replicas[0].url,
            "test-ak",
            "test-sk",
            tuple(LIBRARIES),
            None,
            "",
            0,
            77,
            local=replicas[0],
            urls=[r.url for r in replicas],
        )
    else:
        settings = request.config.stash[_LIVE_KEY]
        assert settings is not None  # pytest_collection_modifyitems skips live tests without settings
        t = Target(
            "live",
            settings.endpoint,
            settings.api_key,
            settings.secret_key,
            settings.libraries,
            settings.qps,
            RUN_PREFIX,
            secrets.randbelow(10**9) + 10**6,
            secrets.randbelow(65000) + 500,
        )
    try:
        yield t
    finally:
        try:
            t.cleanup()
        finally:
            for r in replicas:
                r.stop()


@pytest.fixture(params=["local", pytest.param("live", marks=pytest.mark.live)])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A gallery to run a contract test against: the local gallery, or (marked live) the cloud."""
    yield from _target(request, request.param)


@pytest.fixture(params=["local", "postgres", pytest.param("live", marks=pytest.mark.live)])
def replicated_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """As `target`, plus the local gallery as two replicas of one PostgreSQL database ("postgres": its
    `urls` name both, and a test may send some calls to one and some to the other)."""
    yield from _target(request, request.param)


def wait_until(pred, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll `pred` until it holds (a generous deadline, never a timing assertion)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    assert pred(), f"timed out waiting for {what}"


@pytest.fixture
def forkable() -> None:
    """For tests of what imgsync does in a forked child (imgsync.forked): skips where this machine cannot
    (not Linux, one core); otherwise waits until no other thread runs, since imgsync never forks beside
    one. A thread an earlier test leaves running for good fails here, naming it."""
    import threading

    from imgsync import forked

    if sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("forking is for Linux with two cores")
    wait_until(
        lambda: threading.active_count() == 1,
        what=f"other threads to end: {[t.name for t in threading.enumerate()][1:]}",
    )
    assert forked.can_fork()


# --------------------------------------------------------------------------- a gallery in another process

#: Seconds a process may take to start or stop on a busy machine (a bound, not a timing assertion).
PROCESS_DEADLINE = 180


@contextmanager
def gallery_process(
    command: list[str], args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[str, Path]]:
    """`COMMAND ARGS` (an `imgsync ... gallery serve` in its own process) until the block ends; yields the
    URL and the data dir it announces on its first line. Its stderr goes to `log`."""
    import queue
    import re
    import subprocess
    import threading

    with (
        log.open("w") as stderr,
        subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True) as proc,
    ):
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            try:
                first = lines.get(timeout=PROCESS_DEADLINE)
            except queue.Empty:
                first = None
            announced = re.fullmatch(r"local gallery serving at (\S+) \(data: (.*)\)", (first or "").strip())
            if announced is None:
                pytest.fail(f"the gallery did not start: {first!r} {log.read_text()}")
            yield announced[1], Path(announced[2])
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=PROCESS_DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
            reader.join(timeout=PROCESS_DEADLINE)


# --------------------------------------------------------------------------- screenshots of the browser tests

#: Paths of the screenshots this run saved (tests/test_console_browser.py); the summary names their folder.
SCREENSHOTS = pytest.StashKey["list[Path]"]()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    shots = config.stash.get(SCREENSHOTS, [])
    if shots:
        terminalreporter.write_line(f"console screenshots ({len(shots)}): {shots[0].parent}")


# --------------------------------------------------------------------------- the gallery on PostgreSQL
#
# One PostgreSQL server for the session: the one .ci/run started ($IMGSYNC_TEST_DATABASE, a URL with the
# right to create databases), else one started here in a temp dir (tests/pg_cluster.py). Each test gets a
# fresh database, copied from a template that already holds the gallery's schema. Where no server can be
# had (no PostgreSQL binaries, no driver), the PostgreSQL variants skip and say why; a URL that is set
# but does not answer is an error, not a skip.

TEST_DATABASE_ENV = "IMGSYNC_TEST_DATABASE"
_TEST_DATABASE_KEY = pytest.StashKey["str | None"]()
_PG_TEMPLATE = "imgsync_gallery_template"


class PgServer:
    """A PostgreSQL server the tests may create databases on."""

    def __init__(self, admin_url: str, cluster: object | None = None) -> None:
        self.admin_url = admin_url
        self.cluster = cluster  # a pg_cluster.Cluster when started here
        self._n = 0

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def url_for(self, name: str) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        return make_conninfo(**{**conninfo_to_dict(self.admin_url), "dbname": name})

    def prepare_template(self) -> None:
        from imgsync.localgallery.store_pg import PostgresStore

        self._sql(f"DROP DATABASE IF EXISTS {_PG_TEMPLATE}")
        self._sql(f"CREATE DATABASE {_PG_TEMPLATE}")
        PostgresStore(self.url_for(_PG_TEMPLATE)).close()  # migrated once; copies are instant

    def new_database(self, *, migrated: bool = True) -> str:
        self._n += 1
        name = f"imgsync_t{os.getpid()}_{self._n}"
        self._sql(f"DROP DATABASE IF EXISTS {name}")
        self._sql(f"CREATE DATABASE {name}" + (f" TEMPLATE {_PG_TEMPLATE}" if migrated else ""))
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        self._sql(f"DROP DATABASE IF EXISTS {conninfo_to_dict(url)['dbname']} WITH (FORCE)")


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """A fresh database holding the gallery's schema on the session's server; dropped afterwards."""
    url = pg_server.new_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """The session's PostgreSQL server (see above); skips where none can be had."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need the driver: pip install 'imgsync[postgres]'")
    url = request.config.stash[_TEST_DATABASE_KEY]
    if url:
        server = PgServer(url)
        server.prepare_template()  # fails loudly if the given server does not answer
        yield server
        return
    import pg_cluster

    try:
        cluster = pg_cluster.start_cluster()
    except pg_cluster.ClusterUnavailable as e:
        pytest.skip(f"PostgreSQL tests need a server and none could be started: {e}")
    try:
        server = PgServer(cluster.url, cluster)
        server.prepare_template()
        yield server
    finally:
        cluster.remove()


@pytest.fixture
def private_pg() -> Iterator[object]:
    """A PostgreSQL server of this test's own, to stop and restart (pg_cluster.Cluster); skips where
    none can be started."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need the driver: pip install 'imgsync[postgres]'")
    import pg_cluster

    try:
        cluster = pg_cluster.start_cluster()
    except pg_cluster.ClusterUnavailable as e:
        pytest.skip(f"PostgreSQL fault tests need a server of their own and none could be started: {e}")
    try:
        yield cluster
    finally:
        cluster.remove()


@dataclass
class GalleryPlace:
    """Where a gallery under test keeps its state: a data dir (SQLite) or a database (PostgreSQL)."""

    backend: str  # "sqlite" or "postgres"
    data_dir: Path | None = None
    database: str | None = None

    def start(self, **kw: object) -> object:
        """A RunningGallery on this place (for PostgreSQL: one more replica)."""
        from imgsync.localgallery.server import start_in_thread

        kw.setdefault("host", "127.0.0.1")
        kw.setdefault("port", 0)
        return start_in_thread(self.data_dir, database=self.database, **kw)  # type: ignore[arg-type]

    def engine(self) -> object:
        from imgsync.localgallery.engine import Engine

        if self.database is not None:
            from imgsync.localgallery.store_pg import PostgresStore

            return Engine(PostgresStore(self.database))
        assert self.data_dir is not None
        return Engine(self.data_dir)

    def cli_args(self) -> list[str]:
        """How `imgsync gallery ...` is pointed at this place."""
        return ["--database", self.database] if self.database else ["--data", str(self.data_dir)]


@pytest.fixture(params=["sqlite", "postgres"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> GalleryPlace:
    """A fresh place for a gallery: a data dir, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return GalleryPlace("sqlite", data_dir=tmp_path / "gallery-data")
    return GalleryPlace("postgres", database=request.getfixturevalue("pg_database"))


@dataclass
class Gallery:
    """A gallery under test as a client sees it: one server (SQLite) or two replicas of one database
    (PostgreSQL), with one key. `url` is the first; `urls` all of them."""

    place: GalleryPlace
    replicas: list
    api_key: str = "test-ak"
    secret_key: str = "test-sk"

    @property
    def url(self) -> str:
        return str(self.replicas[0].url)

    @property
    def urls(self) -> list[str]:
        return [str(r.url) for r in self.replicas]

    @property
    def data_dir(self) -> Path | None:
        return self.place.data_dir


@pytest.fixture
def gallery(place: GalleryPlace) -> Iterator[Gallery]:
    """The gallery protocol suites run against: a server on a data dir, or two replicas on one database."""
    replicas = []
    try:
        for _ in range(1 if place.backend == "sqlite" else 2):
            replicas.append(place.start(keys=[("test-ak", "test-sk")], allow_private_urls=True))
        yield Gallery(place, replicas)
    finally:
        for r in replicas:
            r.stop()
