"""Shared fixtures: a real local gallery over HTTP on 127.0.0.1, real images made with Pillow.

No mocks of imgsync's own parts: tests talk to the real server, a real SQLite file and a real
filesystem in a temp dir.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


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
