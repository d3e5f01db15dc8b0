"""The gallery's data dir on a full disk: a real 20 MB tmpfs, filled up while the gallery serves.

Token requests and searches keep working; every write answers error 2 saying the disk is full;
nothing is half-written; the server stops cleanly, and once space is freed it takes writes again.
Mounting needs root (CI runs as root); elsewhere the test skips, saying so.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import make_image
from imgsync.libraries import LIBRARIES, TOKEN_PATH
from imgsync.localgallery.server import start_in_thread
from imgsync.localgallery.store_sqlite import SqliteStore

B64 = base64.b64encode


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a full disk is made by mounting a 20 MB tmpfs, which needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def token(url: str) -> requests.Response:
    return requests.get(
        url + TOKEN_PATH, params={"grant_type": "client_credentials", "client_id": "k", "client_secret": "s"}
    )


def call(url: str, tok: str, op: str, **form: object) -> dict:
    r = requests.post(url + LIBRARIES["same_hq"].path(op), params={"access_token": tok}, data=form)
    assert r.status_code == 200
    return r.json()


def test_a_full_disk_refuses_writes_clearly_and_keeps_serving_the_rest(small_disk: Path) -> None:
    data = small_disk / "gallery"
    one, two = make_image(1), make_image(2)
    first = start_in_thread(data, keys=[("k", "s")])
    try:
        tok = token(first.url).json()["access_token"]
        sign = call(first.url, tok, "add", image=B64(one), brief="one")["cont_sign"]
        filler = fill(small_disk)

        fresh = token(first.url)
        assert fresh.status_code == 200 and fresh.json()["access_token"]
        tok = fresh.json()["access_token"]
        for op, form in (
            ("add", {"image": B64(two), "brief": "two"}),
            ("update", {"cont_sign": sign, "brief": "renamed"}),
            ("delete", {"cont_sign": sign}),
        ):
            answer = call(first.url, tok, op, **form)
            assert answer["error_code"] == 2, (op, answer)
            assert "disk is full" in answer["error_msg"] and "nothing was stored" in answer["error_msg"]
        hits = call(first.url, tok, "search", image=B64(one))["result"]
        assert [(h["cont_sign"], h["brief"]) for h in hits] == [(sign, "one")]
    finally:
        first.stop()  # the index files cannot be saved: a warning, not a failure

    filler.unlink()
    second = start_in_thread(data, keys=[("k", "s")])
    try:
        tok = token(second.url).json()["access_token"]
        assert [(h["cont_sign"], h["brief"]) for h in call(second.url, tok, "search", image=B64(one))["result"]] == [
            (sign, "one")
        ]
        sign2 = call(second.url, tok, "add", image=B64(two), brief="two")["cont_sign"]
        assert call(second.url, tok, "search", image=B64(two))["result"][0]["cont_sign"] == sign2
    finally:
        second.stop()
    store = SqliteStore(data, read_only=True)
    try:
        assert [(e["cont_sign"], e["brief"]) for e in store.entries("same_hq")] == [(sign, "one"), (sign2, "two")]
    finally:
        store.close()
    with sqlite3.connect(data / "gallery.sqlite3") as db:  # no half-written entry: every part or none
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM copies").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM extras").fetchone()[0] == 2
        assert db.execute("SELECT count(*) FROM changes WHERE kind = 'add'").fetchone()[0] == 2
