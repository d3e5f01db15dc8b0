"""The matcher framework: store schema migration, working copies and re-extraction when a matcher
changes, the persisted vote index (restart, missing file, stale file), and per-entry extras."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.photos import photos
from benchmarks.variants import SAME_IMAGE, encode
from imgsync.localgallery.engine import Engine, IndexVersionError
from imgsync.localgallery.store import StoreVersionError
from imgsync.localgallery.store_sqlite import SCHEMA_VERSION, SqliteStore

_V0_SCHEMA = """
CREATE TABLE libraries (name TEXT PRIMARY KEY, matcher TEXT NOT NULL);
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, library TEXT NOT NULL, cont_sign TEXT NOT NULL,
    brief TEXT NOT NULL, tag1 INTEGER NOT NULL DEFAULT 0, tag2 INTEGER NOT NULL DEFAULT 0,
    class_id1 INTEGER NOT NULL DEFAULT 0, class_id2 INTEGER NOT NULL DEFAULT 0,
    features BLOB NOT NULL, UNIQUE (library, cont_sign));
"""


@pytest.fixture(scope="module")
def pics() -> dict[str, Image.Image]:
    p = photos()
    return {n: p[n] for n in ("astronaut", "rocket", "china", "coffee")}


def _crop_query(im: Image.Image) -> bytes:
    return SAME_IMAGE["crop 20%"](im, np.random.default_rng(3))


def _make_v0_dir(path: Path, with_entry: bool) -> None:
    path.mkdir()
    with sqlite3.connect(path / "gallery.sqlite3") as db:
        db.executescript(_V0_SCHEMA)
        db.execute("INSERT INTO libraries VALUES ('same_hq', 'same-image/phash64x3+dct143-v1')")
        if with_entry:
            db.execute(
                "INSERT INTO entries (library, cont_sign, brief, features) VALUES "
                "('same_hq', '1,2', 'old', zeroblob(1740))"
            )


def test_first_release_data_dir_is_migrated(tmp_path: Path, pics: dict[str, Image.Image]) -> None:
    _make_v0_dir(tmp_path / "d", with_entry=False)
    e = Engine(tmp_path / "d")
    try:
        e.add("same_hq", encode(pics["rocket"], "PNG"), brief="rocket")
        assert e.search("same_hq", _crop_query(pics["rocket"]))[0][0][2] == "rocket"
    finally:
        e.close()
    with sqlite3.connect(tmp_path / "d" / "gallery.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM copies").fetchone()[0] == 1


def test_first_release_entries_without_copies_refuse_a_matcher_change(tmp_path: Path) -> None:
    _make_v0_dir(tmp_path / "d", with_entry=True)
    with pytest.raises(IndexVersionError, match="same_hq: its 1 entries.*1 of them have no stored working copy"):
        Engine(tmp_path / "d")


def test_newer_store_schema_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "gallery.sqlite3") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreVersionError, match=f"schema {SCHEMA_VERSION + 1}"):
        SqliteStore(tmp_path)


def test_matcher_change_reextracts_from_working_copies(
    tmp_path: Path, pics: dict[str, Image.Image], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imgsync.localgallery.engine as engine_module

    # One entry a batch and no pause between progress lines: each batch but the last says how far it is.
    monkeypatch.setattr(engine_module, "REEXTRACT_TELL_S", 0.0)
    scan_copies = SqliteStore.scan_copies
    monkeypatch.setattr(SqliteStore, "scan_copies", lambda self, library, batch=1: scan_copies(self, library, 1))
    e = Engine(tmp_path)
    for n, im in pics.items():
        e.add("same_hq", encode(im, "PNG"), brief=n)
    e.close()
    # Simulate features written by an older matcher: other name, features and keypoints unusable.
    with sqlite3.connect(tmp_path / "gallery.sqlite3") as db:
        db.execute("UPDATE libraries SET matcher = 'old-matcher' WHERE name = 'same_hq'")
        db.execute("UPDATE entries SET features = zeroblob(length(features)) WHERE library = 'same_hq'")
        db.execute("DELETE FROM extras")
    with caplog.at_level(logging.WARNING, logger="imgsync.localgallery.engine"):
        e = Engine(tmp_path)
    try:
        assert any(
            "same_hq: matcher changed from old-matcher" in r.message and "4 entries" in r.message
            for r in caplog.records
        )
        told = [r.message for r in caplog.records if " of 4 entries, about " in r.message]
        assert [m.split(": re-extracted ")[1].split(",")[0] for m in told] == [
            "1 of 4 entries",
            "2 of 4 entries",
            "3 of 4 entries",
        ]
        for n, im in pics.items():
            results, _ = e.search("same_hq", _crop_query(im))
            assert results[0][2] == n and results[0][1] >= 0.9
    finally:
        e.close()


def test_vote_index_survives_restart_and_rebuilds_when_missing(tmp_path: Path, pics: dict[str, Image.Image]) -> None:
    e = Engine(tmp_path)
    for n, im in pics.items():
        e.add("same_hq", encode(im, "PNG"), brief=n)
    e.close()
    index = tmp_path / "index" / "same_hq" / "votes.faiss"
    assert index.exists()
    for step in ("saved", "missing"):
        if step == "missing":
            index.unlink()
        e = Engine(tmp_path)
        try:
            assert e.search("same_hq", _crop_query(pics["china"]))[0][0][2] == "china", step
        finally:
            e.close()


def test_stale_vote_index_catches_up_with_entries_added_since(tmp_path: Path, pics: dict[str, Image.Image]) -> None:
    """As after a crash: the saved index predates the last adds and deletes."""
    e = Engine(tmp_path)
    signs = {n: e.add("same_hq", encode(pics[n], "PNG"), brief=n) for n in ("astronaut", "rocket")}
    e.close()
    index = tmp_path / "index" / "same_hq"
    shutil.copytree(index, tmp_path / "old-index")
    e = Engine(tmp_path)
    e.add("same_hq", encode(pics["coffee"], "PNG"), brief="coffee")
    e.delete("same_hq", [signs["rocket"]])
    e.close()
    shutil.rmtree(index)
    shutil.copytree(tmp_path / "old-index", index)
    e = Engine(tmp_path)
    try:
        assert e.search("same_hq", _crop_query(pics["coffee"]))[0][0][2] == "coffee"
        assert e.search("same_hq", _crop_query(pics["rocket"]))[0] == []
    finally:
        e.close()


def test_update_keeps_features_and_delete_drops_extras_and_copies(tmp_path: Path, pics: dict[str, Image.Image]) -> None:
    e = Engine(tmp_path)
    try:
        sign = e.add("same_hq", encode(pics["astronaut"], "PNG"), brief="before", tags=(1,))
        e.add("same_hq", encode(pics["rocket"], "PNG"), brief="rocket")
        e.update("same_hq", sign, brief="after", tags=(2,))
        results, _ = e.search("same_hq", _crop_query(pics["astronaut"]), tags=(2,))
        assert [b for _, _, b in results] == ["after"] and results[0][1] >= 0.9
        e.delete("same_hq", [sign])
    finally:
        e.close()
    with sqlite3.connect(tmp_path / "gallery.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM extras").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM copies").fetchone()[0] == 1


def test_embedded_gallery_that_cannot_be_upgraded_says_what_to_do(tmp_path: Path) -> None:
    from imgsync.config import parse_config
    from imgsync.embedded import local_data_dir, open_gallery
    from imgsync.errors import ManifestError

    config = parse_config({"state_dir": str(tmp_path / "state")}, env={})
    local_data_dir(config).parent.mkdir(parents=True)
    _make_v0_dir(local_data_dir(config), with_entry=True)
    with pytest.raises(ManifestError, match=r"cannot be opened by this imgsync.*Move .*gallery and .*manifest.sqlite3"):
        with open_gallery(config):
            pass


def test_vote_index_is_written_only_when_it_changed(tmp_path: Path, pics: dict[str, Image.Image]) -> None:
    e = Engine(tmp_path)
    e.add("same_hq", encode(pics["rocket"], "PNG"), brief="rocket")
    e.close()
    saved = tmp_path / "index" / "same_hq" / "votes.faiss"
    first = saved.stat().st_mtime_ns
    Engine(tmp_path).close()  # opened and closed, nothing added: the file is left alone
    assert saved.stat().st_mtime_ns == first
    e = Engine(tmp_path)
    e.add("same_hq", encode(pics["coffee"], "PNG"), brief="coffee")
    e.close()
    assert saved.stat().st_mtime_ns != first
