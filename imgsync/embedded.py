"""The configured gallery, ready to call: `with open_gallery(config) as gallery: ...`. Composition, not the
client: it ties the config to the gallery client (imgsync.gallery) and, for the embedded default, to the
local gallery (imgsync.localgallery), which know nothing of each other.

endpoint = "local" (the default): the local gallery is started in this process on 127.0.0.1 (an
ephemeral port, so several imgsync processes never fight over one) with its data under
`<state_dir>/gallery`. Its key is created on first use and kept in `<state_dir>/gallery/server-key.json`
(mode 0600; `imgsync gallery serve --data <state_dir>/gallery` serves the same gallery with the same key).
The server stops when the block ends.

Without the gallery extra (`pip install imgsync` alone), endpoint = "local" is a GalleryNotInstalledError
(exit 2) saying what to install, raised before anything starts.

endpoint = a URL: a GalleryClient for it with the configured keys; a missing key is a ConfigError
naming where to set it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from imgsync.config import Config
from imgsync.errors import ConfigError, GalleryUnavailableError, ManifestError

if TYPE_CHECKING:
    from imgsync.gallery.client import GalleryClient
from imgsync.gallery.extra import require_local_gallery
from imgsync.gallery.identity import gallery_identity, local_data_dir  # noqa: F401 (re-exported)
from imgsync.statedir import manifest_path

log = logging.getLogger("imgsync.gallery")


def make_local_data_dir(config: Config) -> Path:
    """local_data_dir, created if need be. It holds the gallery's key: readable by its owner only."""
    data_dir = local_data_dir(config)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.mkdir(exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)
    return data_dir


def _client(config: Config, url: str, api_key: str, secret_key: str) -> GalleryClient:
    """A client for `url` with the config's pacing: qps, calls in flight, timeouts ((connect, read):
    connecting never needs the whole read budget)."""
    from imgsync.gallery.client import GalleryClient

    g = config.gallery
    return GalleryClient(
        url, api_key, secret_key, qps=g.qps, in_flight=g.in_flight, timeout=(min(5.0, g.timeout), g.timeout)
    )


def check_gallery(config: Config) -> None:
    """What open_gallery refuses before it starts anything (a ConfigError, exit 2): the keys of a URL, the
    local gallery's packages. Commands that write to the state dir call it first, so a refusal leaves
    nothing behind."""
    g = config.gallery
    if g.endpoint == "local":
        require_local_gallery('gallery.endpoint = "local" (the default)', elsewhere=True)
        return
    missing = g.missing_key()
    if missing is not None:
        name, env = missing
        what = "an API key" if name == "api_key" else "a secret key"
        raise ConfigError(
            f"gallery.{name}: gallery.endpoint is a URL, so {what} is needed: set {env} or [gallery] {name}"
        )


@contextmanager
def open_gallery(config: Config) -> Iterator[GalleryClient]:
    # The client (requests) is imported in _client: check_gallery and the identity are asked by runs that
    # end without a call (a no-op reconcile), which must not pay for it.
    check_gallery(config)
    g = config.gallery
    if g.endpoint == "local":
        with _embedded(config) as client:
            yield client
        return
    assert g.api_key and g.secret_key  # check_gallery
    with _client(config, g.endpoint, g.api_key, g.secret_key) as client:
        yield client


@contextmanager
def _embedded(config: Config) -> Iterator[GalleryClient]:
    # Imported here: the local gallery pulls in the search engine (numpy, OpenCV, onnxruntime, faiss),
    # which a cloud user never needs and a light install does not have.
    from imgsync.localgallery.server import start_in_thread

    data_dir = make_local_data_dir(config)
    from imgsync.localgallery.engine import DataDirInUseError, IndexVersionError
    from imgsync.localgallery.store import StoreVersionError

    try:
        running = start_in_thread(data_dir, host="127.0.0.1", port=0)
    except DataDirInUseError as e:
        # Another imgsync (`watch`, a reconcile, `gallery serve`) holds the gallery: talk to it.
        with _client_of_the_holder(config, data_dir, e) as client:
            yield client
        return
    except (IndexVersionError, StoreVersionError) as e:
        manifest = manifest_path(config.state_dir)
        raise ManifestError(
            f"the embedded gallery in {data_dir} cannot be opened by this imgsync: {e}. Move {data_dir} and "
            f"{manifest} aside (or delete them) and run `imgsync reconcile` again: every image is uploaded anew"
        ) from None
    try:
        with _client(config, running.url, running.api_key, running.secret_key) as client:
            yield client
    except BaseException:
        # What ended the run is the error to show: a failure while stopping (a full disk refusing the
        # index cache, say) must not hide it.
        try:
            running.stop()
        except Exception as e:
            log.warning("the embedded gallery did not stop cleanly: %s", e)
        raise
    running.stop()


@contextmanager
def _client_of_the_holder(config: Config, data_dir: Path, busy: Exception) -> Iterator[GalleryClient]:
    from imgsync.localgallery.auth import load_or_create_key
    from imgsync.localgallery.server import serving_url

    url = serving_url(data_dir)
    if url is None:
        raise GalleryUnavailableError(f"{busy}, which does not serve it over HTTP; try again when it is done")
    (api_key, secret_key), _ = load_or_create_key(data_dir)
    with _client(config, url, api_key, secret_key) as client:
        yield client
