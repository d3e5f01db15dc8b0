"""Shared by the console's tests: the README quick start's catalogue in a temp dir, reconciled for real
(the embedded local gallery, or a local gallery served at a URL the way the cloud is reached), and the
console served in a thread on an ephemeral loopback port."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: A file rejected for its size (same_hq wants the shortest side ≥ 50 px), and one that is not an image.
TINY = "tiny.png"
TINY_REASON = "shortest side"
NOTES = "notes.jpg"
NOTES_REASON = "not an image"


def old(path: Path) -> Path:
    """Make a file look saved an hour ago: a one-shot reconcile then takes it at once (no settle wait)."""
    then = time.time() - 3600
    os.utime(path, (then, then))
    return path


def tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Setup:
    config: Path
    state: Path
    folder: Path
    tmp: Path

    def open(self):  # -> imgsync.api.Imgsync
        from imgsync.api import Imgsync

        return Imgsync.open(self.config, state_dir=self.state)


def catalogue(tmp: Path, *, gallery=None, name: str = "catalogue", extra: bool = True) -> Setup:
    """The example catalogue (6 pictures) plus a too-small picture and a text file named .jpg, mirrored
    by reconcile. gallery: a RunningGallery to reach by URL (as the cloud is), else the embedded one."""
    folder = tmp / name
    shutil.copytree(EXAMPLES / "catalogue", folder)
    if extra:
        (folder / TINY).write_bytes(tiny_png())
        (folder / NOTES).write_text("shopping list: milk, eggs\n")
        old(folder / TINY)
        old(folder / NOTES)
    config = tmp / "config.toml"
    text = ""
    if gallery is not None:
        text = (
            f'[gallery]\nendpoint = "{gallery.url}"\napi_key = "{gallery.api_key}"\n'
            f'secret_key = "{gallery.secret_key}"\n'
        )
    config.write_text(text)
    setup = Setup(config, tmp / "state", folder, tmp)
    with setup.open() as sync:
        sync.reconcile([folder])
    return setup


@contextmanager
def serving(setup: Setup, **options) -> Iterator:  # -> RunningConsole
    from imgsync.console import start_console

    running = start_console(setup.open, setup.state, port=0, **options)
    try:
        yield running
    finally:
        running.stop()
