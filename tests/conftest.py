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
def gallery_server(tmp_path: Path) -> Iterator["object"]:
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
LIVE_NOT_SELECTED = ("live: talks to Baidu's cloud; runs only with `pytest -m live` "
                     "and IMGSYNC_LIVE_API_KEY / IMGSYNC_LIVE_SECRET_KEY set")
LIVE_NO_CREDENTIALS = ("live: set IMGSYNC_LIVE_API_KEY and IMGSYNC_LIVE_SECRET_KEY (and IMGSYNC_LIVE_LIBRARIES, "
                       "the libraries the account has) to run against the cloud")
#: One prefix per pytest run: every brief a live test writes starts with it (find leftovers by it).
RUN_PREFIX = f"imgsync-test-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}-"


@dataclass(frozen=True)
class LiveSettings:
    endpoint: str
    api_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    libraries: tuple[str, ...]
    qps: float


def live_settings(env: "dict[str, str] | os._Environ[str]") -> LiveSettings | None:
    """The live target's settings from the environment, or None when the keys are not both set."""
    from imgsync.libraries import LIBRARIES

    ak, sk = env.get("IMGSYNC_LIVE_API_KEY", "").strip(), env.get("IMGSYNC_LIVE_SECRET_KEY", "").strip()
    if not ak or not sk:
        return None
    libraries = tuple(n.strip() for n in env.get("IMGSYNC_LIVE_LIBRARIES", "same_hq").split(",") if n.strip())
    unknown = [n for n in libraries if n not in LIBRARIES]
    if unknown:
        raise pytest.UsageError(f"IMGSYNC_LIVE_LIBRARIES: unknown library {unknown[0]!r} (known: {', '.join(LIBRARIES)})")
    return LiveSettings(env.get("IMGSYNC_LIVE_ENDPOINT", LIVE_DEFAULT_ENDPOINT).strip(), ak, sk, libraries,
                        float(env.get("IMGSYNC_LIVE_QPS", "2")))


_LIVE_KEY = pytest.StashKey["LiveSettings | None"]()


def pytest_configure(config: pytest.Config) -> None:
    # Read now: the autouse _clean_environ fixture removes every IMGSYNC_* variable before each test.
    config.stash[_LIVE_KEY] = live_settings(os.environ)


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
    local: "object | None" = None
    added: list[tuple[str, str]] = field(default_factory=list)

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

    def client(self, session: object = None, **kw: object) -> "object":
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


@pytest.fixture(params=["local", pytest.param("live", marks=pytest.mark.live)])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A gallery to run a contract test against: the local gallery, or (marked live) the cloud."""
    from imgsync.libraries import LIBRARIES

    if request.param == "local":
        server = request.getfixturevalue("gallery_server")
        t = Target("local", server.url, server.api_key, server.secret_key, tuple(LIBRARIES), None, "", 0, 77,
                   local=server)
    else:
        settings = request.config.stash[_LIVE_KEY]
        assert settings is not None  # pytest_collection_modifyitems skips live tests without settings
        t = Target("live", settings.endpoint, settings.api_key, settings.secret_key, settings.libraries,
                   settings.qps, RUN_PREFIX, secrets.randbelow(10**9) + 10**6, secrets.randbelow(65000) + 500)
    try:
        yield t
    finally:
        t.cleanup()


def wait_until(pred, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll `pred` until it holds (a generous deadline, never a timing assertion)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    assert pred(), f"timed out waiting for {what}"


# --------------------------------------------------------------------------- a gallery in another process

#: Seconds a process may take to start or stop on a busy machine (a bound, not a timing assertion).
PROCESS_DEADLINE = 180


@contextmanager
def gallery_process(command: list[str], args: list[str], log: Path, env: dict[str, str] | None = None
                    ) -> Iterator[tuple[str, Path]]:
    """`COMMAND ARGS` (an `imgsync ... gallery serve` in its own process) until the block ends; yields the
    URL and the data dir it announces on its first line. Its stderr goes to `log`."""
    import queue
    import re
    import subprocess
    import threading

    with log.open("w") as stderr, subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE,
                                                   stderr=stderr, text=True) as proc:
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
