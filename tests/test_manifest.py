"""The manifest Store and StateLock against real SQLite files in tmp_path (no mocks)."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import pytest

from imgsync.clock import FakeClock
from imgsync.errors import LockHeldError, ManifestError
from imgsync.manifest import ContSignTakenError, StateLock, Store
from imgsync.model import Entry, ScannedFile

M = "photos"


def h(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def sf(
    path: str, n: int | str = 0, verdict: str = "ok", *, size: int = 100, inode: int = 1, reason: str | None = None
) -> ScannedFile:
    return ScannedFile(path, size, 1_700_000_000_000_000_000, inode, h(n), verdict, reason, 5)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "state" / "manifest.sqlite3", clock=FakeClock()) as s:
        yield s


def add_live(
    store: Store,
    n: int,
    paths: tuple[str, ...] = (),
    *,
    mirror: str = M,
    library: str = "same_hq",
    cont_sign: str | None = None,
) -> Entry:
    entry, jid = store.begin_add(mirror, library, h(n), lambda i: f'{{"id":{i}}}', (), (None, None), None)
    store.finish_add(jid, entry.id, cont_sign or f"sign-{n}", paths)
    return store.entries(mirror)[entry.id]


def raw(store: Store, sql: str) -> list[tuple]:
    con = sqlite3.connect(store.path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------------- open / reopen


def test_open_creates_directories_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "manifest.sqlite3"
    with Store.open(path) as s:
        assert s.schema_revision() == "0006"
        assert s.mirror_names() == []
    assert path.is_file()
    assert raw_journal_mode(path) == "wal"


def raw_journal_mode(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()


def test_everything_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    with Store.open(path) as s:
        s.save_scan(M, [sf("a.jpg", 1), sf("b.jpg", 2, "rejected", reason="too small")])
        entry = add_live(s, 1, ("a.jpg",))
        run = s.start_run(M)
        s.finish_run(run, "ok", {"added": 1})
        s.set_mirror_state(M, "/photos", 2049, 2)
    with Store.open(path) as s:
        known = s.known_files(M)
        assert known["a.jpg"].entry_id == entry.id
        assert known["b.jpg"].verdict == "rejected" and known["b.jpg"].reason == "too small"
        assert s.entries(M) == {entry.id: entry}
        last = s.last_run(M)
        assert last is not None and last.status == "ok" and last.counts == {"added": 1}
        state = s.mirror_state(M)
        assert state is not None and (state.folder, state.device, state.file_count) == ("/photos", 2049, 2)
        assert state.last_run_id == run


def test_open_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ManifestError, match="not a database"):
        Store.open(path)
    assert path.read_bytes() == b"this is not sqlite at all" * 100


def test_open_refuses_another_programs_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (x TEXT)")
    con.commit()
    con.close()
    with pytest.raises(ManifestError, match="not an imgsync manifest"):
        Store.open(path)
    con = sqlite3.connect(path)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["notes"]
    con.close()


def test_open_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "m.sqlite3").mkdir()
    with pytest.raises(ManifestError, match="not a file"):
        Store.open(tmp_path / "m.sqlite3")


def test_a_closed_store_refuses_use(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "m.sqlite3")
    s.close()
    with pytest.raises(ManifestError, match="closed"):
        s.known_files(M)


# ---------------------------------------------------------------------- files


def test_save_scan_upserts_keeps_entry_ids_and_forgets_gone(store: Store) -> None:
    store.save_scan(M, [sf("a.jpg", 1), sf("b.jpg", 2), sf("c.jpg", 3)])
    entry = add_live(store, 1, ("a.jpg",))
    store.save_scan(M, [sf("a.jpg", 1, size=555), sf("d.jpg", 4)], gone=["b.jpg"])
    known = store.known_files(M)
    assert sorted(known) == ["a.jpg", "c.jpg", "d.jpg"]
    assert known["a.jpg"].size == 555 and known["a.jpg"].entry_id == entry.id
    assert known["d.jpg"].entry_id is None and known["d.jpg"].content_hash == h(4)
    assert known["a.jpg"].hashed_at_ns == 5


def test_save_scan_keeps_a_path_both_scanned_and_gone(store: Store) -> None:
    store.save_scan(M, [sf("a.jpg", 1)])
    store.save_scan(M, [sf("a.jpg", 2)], gone=["a.jpg"])
    assert store.known_files(M)["a.jpg"].content_hash == h(2)


def test_save_scan_is_all_or_nothing(store: Store) -> None:
    store.save_scan(M, [sf("keep.jpg", 1)])
    bad = [sf("x.jpg", 2), ScannedFile("y.jpg", 1, 1, 1, None, "maybe", None)]  # type: ignore[arg-type]
    with pytest.raises(ManifestError, match="verdict 'maybe'"):
        store.save_scan(M, bad, gone=["keep.jpg"])
    assert sorted(store.known_files(M)) == ["keep.jpg"]


def test_mirrors_are_kept_apart(store: Store) -> None:
    store.save_scan("one", [sf("a.jpg", 1)])
    store.save_scan("two", [sf("a.jpg", 2)])
    store.save_scan("one", [], gone=["a.jpg"])
    assert store.known_files("one") == {}
    assert store.known_files("two")["a.jpg"].content_hash == h(2)
    assert store.mirror_names() == ["two"]


ODD_PATHS = [
    "with space/and  two.jpg",
    "emoji 📷/🐈‍⬛.png",
    "new\nline.jpg",
    "tab\there.jpg",
    unicodedata.normalize("NFD", "café.jpg"),  # decomposed: must stay distinct from the NFC spelling
    unicodedata.normalize("NFC", "café.jpg"),
    "back\\slash.jpg",
    "quote'\"; DROP TABLE files;--.jpg",
    "not-utf8-\udcff\udcfe.jpg",  # os.fsdecode of a Latin-1 file name on Linux
    "lone-\ud800-surrogate.jpg",
    "%percent%s.jpg",
    "x" * 4000 + ".jpg",
]


def test_odd_paths_round_trip_exactly(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    with Store.open(path) as s:
        s.save_scan(M, [sf(p, i, inode=i + 10) for i, p in enumerate(ODD_PATHS)])
        entry = add_live(s, 99, tuple(ODD_PATHS[:3]))
        s.set_verdict(M, ODD_PATHS[8], "rejected", f"bad image: {ODD_PATHS[8]}")
    with Store.open(path) as s:
        known = s.known_files(M)
        assert set(known) == set(ODD_PATHS)
        assert len(known) == len(ODD_PATHS)
        for i, p in enumerate(ODD_PATHS):
            assert known[p].path == p and known[p].inode == i + 10
        assert [p for p in ODD_PATHS if known[p].entry_id == entry.id] == ODD_PATHS[:3]
        assert known[ODD_PATHS[8]].reason == f"bad image: {ODD_PATHS[8]}"
        s.save_scan(M, [], gone=ODD_PATHS[4:10])
        assert set(s.known_files(M)) == set(ODD_PATHS[:4] + ODD_PATHS[10:])


def test_ordinary_unicode_paths_are_stored_as_plain_text(store: Store) -> None:
    store.save_scan(M, [sf("emoji 📷.png", 1), sf("bad-\udcff.jpg", 2)])
    stored = sorted(r[0] for r in raw(store, "SELECT path FROM files"))
    assert "emoji 📷.png" in stored  # readable with the sqlite3 shell
    assert all(not p.startswith("bad-") for p in stored)  # the surrogate one is escaped, not mangled


def test_large_inode_and_device_numbers_round_trip(store: Store) -> None:
    big = (1 << 64) - 3
    store.save_scan(M, [sf("a.jpg", 1, inode=big), sf("b.jpg", 2, inode=(1 << 63))])
    known = store.known_files(M)
    assert known["a.jpg"].inode == big and known["b.jpg"].inode == 1 << 63
    store.set_mirror_state(M, "/x", big, 0)
    assert store.mirror_state(M).device == big  # type: ignore[union-attr]


def test_set_verdict(store: Store) -> None:
    store.save_scan(M, [sf("a.jpg", 1)])
    store.set_verdict(M, "a.jpg", "rejected", "refused by the gallery: too small")
    f = store.known_files(M)["a.jpg"]
    assert (f.verdict, f.reason) == ("rejected", "refused by the gallery: too small")
    with pytest.raises(ManifestError, match="no file 'nope.jpg'"):
        store.set_verdict(M, "nope.jpg", "error", None)
    with pytest.raises(ManifestError, match="verdict"):
        store.set_verdict(M, "a.jpg", "fine", None)  # type: ignore[arg-type]


def test_map_files(store: Store) -> None:
    store.save_scan(M, [sf("a.jpg", 1), sf("b.jpg", 1)])
    entry = add_live(store, 1)
    store.map_files(M, ["a.jpg", "b.jpg", "unknown.jpg"], entry.id)
    assert {p: f.entry_id for p, f in store.known_files(M).items()} == {"a.jpg": entry.id, "b.jpg": entry.id}
    store.map_files(M, ["b.jpg"], None)
    assert store.known_files(M)["b.jpg"].entry_id is None
    with pytest.raises(ManifestError, match="no entry 12345"):
        store.map_files(M, ["a.jpg"], 12345)
    with pytest.raises(ManifestError, match="belongs to mirror"):
        store.map_files("other", ["a.jpg"], entry.id)


# ---------------------------------------------------------------------- adds


def test_add_lifecycle(store: Store) -> None:
    store.save_scan(M, [sf("a.jpg", 1), sf("copy.jpg", 1)])
    entry, jid = store.begin_add(
        M, "product", h(1), lambda i: f'{{"id":{i},"path":"a.jpg"}}', (), (7, None), "/spool/x.img"
    )
    assert entry.state == "adding" and entry.cont_sign is None
    assert entry.brief == f'{{"id":{entry.id},"path":"a.jpg"}}'
    assert (entry.class_id1, entry.class_id2) == (7, None)
    [item] = store.open_journal()
    assert (item.id, item.op, item.mirror, item.library, item.entry_ids, item.state) == (
        jid,
        "add",
        M,
        "product",
        (entry.id,),
        "intent",
    )
    assert item.payload == {
        "brief": entry.brief,
        "tags": [],
        "class_ids": [7, None],
        "spool": "/spool/x.img",
        "content_hash": h(1),
    }
    assert store.known_files(M)["a.jpg"].entry_id is None  # not mapped before the add is confirmed

    store.finish_add(jid, entry.id, "sign-1", ["a.jpg", "copy.jpg"])
    live = store.entries(M)[entry.id]
    assert (live.state, live.cont_sign) == ("live", "sign-1")
    assert {f.entry_id for f in store.known_files(M).values()} == {entry.id}
    assert store.open_journal() == []
    assert store.journal_item(jid).state == "done"  # type: ignore[union-attr]
    with pytest.raises(ManifestError, match="already done"):
        store.finish_add(jid, entry.id, "sign-1", [])


def test_begin_add_saves_the_scanned_file_with_the_intent_or_not_at_all(store: Store) -> None:
    """An add started during the walk (EarlyAdds) saves its file's row in begin_add's own transaction: the
    row is there for finish_add to map, and when begin_add fails (the image is already an entry of the
    mirror, a brief template that raises) neither the row nor the intent is written."""
    entry, jid = store.begin_add(M, "same_hq", h(1), str, (), (None, None), None, scanned=sf("a.jpg", 1))
    assert store.known_files(M)["a.jpg"].as_scanned() == sf("a.jpg", 1)
    store.finish_add(jid, entry.id, "sign-1", ["a.jpg"])
    assert store.known_files(M)["a.jpg"].entry_id == entry.id
    with pytest.raises(ManifestError, match="one entry per distinct image"):
        store.begin_add(M, "same_hq", h(1), str, (), (None, None), None, scanned=sf("copy-of-a.jpg", 1))

    def broken_brief(entry_id: int) -> str:
        raise ValueError("template exploded")

    with pytest.raises(ValueError, match="template exploded"):
        store.begin_add(M, "same_hq", h(2), broken_brief, (), (None, None), None, scanned=sf("b.jpg", 2))
    with pytest.raises(ManifestError, match="verdict"):
        store.begin_add(M, "same_hq", h(3), str, (), (None, None), None, scanned=sf("c.jpg", 3, "maybe"))
    assert set(store.known_files(M)) == {"a.jpg"}
    assert store.open_journal() == [] and len(store.entries(M)) == 1


def test_a_failure_inside_begin_add_writes_nothing(store: Store) -> None:
    def broken_brief(entry_id: int) -> str:
        raise ValueError("template exploded")

    with pytest.raises(ValueError, match="template exploded"):
        store.begin_add(M, "same_hq", h(1), broken_brief, (), (None, None), None)
    assert store.entries(M) == {}
    assert store.open_journal() == []
    assert raw(store, "SELECT count(*) FROM journal") == [(0,)]
    entry, _ = store.begin_add(M, "same_hq", h(1), str, (), (None, None), None)  # the hash is free again
    assert entry.brief == str(entry.id)


def test_one_entry_per_image_per_mirror(store: Store) -> None:
    first = add_live(store, 1)
    with pytest.raises(ManifestError, match=f"already has entry {first.id}"):
        store.begin_add(M, "same_hq", h(1), str, (), (None, None), None)
    assert len(store.open_journal()) == 0
    add_live(store, 1, mirror="elsewhere", cont_sign="sign-x")  # another mirror may hold the same image
    # While the old entry is being deleted its replacement may be added.
    store.begin_delete(M, [first.id])
    replacement = add_live(store, 1, cont_sign="sign-1b")
    assert replacement.id != first.id


def test_gallery_id_taken_by_another_entry_is_refused(store: Store) -> None:
    other = add_live(store, 1, mirror="other", cont_sign="dup-sign")
    store.save_scan(M, [sf("a.jpg", 2)])
    entry, jid = store.begin_add(M, "same_hq", h(2), str, (), (None, None), None)
    with pytest.raises(ContSignTakenError) as info:
        store.finish_add(jid, entry.id, "dup-sign", ["a.jpg"])
    assert (info.value.other_entry_id, info.value.other_mirror) == (other.id, "other")
    # Nothing of the finish was applied: the add is still open, so the caller can abort it.
    assert store.entries(M)[entry.id].state == "adding"
    assert [i.id for i in store.open_journal()] == [jid]
    assert store.known_files(M)["a.jpg"].entry_id is None
    store.abort_add(jid, entry.id, str(info.value))
    # The same gallery id in another library is a different entry.
    entry, jid = store.begin_add(M, "similar", h(2), str, (), (None, None), None)
    store.finish_add(jid, entry.id, "dup-sign", [])
    assert store.entries(M)[entry.id].cont_sign == "dup-sign"


def test_a_file_refused_as_another_entry_is_judged_again_once_that_entry_is_deleted(store: Store) -> None:
    """The refusal waits on the owning entry: deleting it makes the file untrusted (the next scan reads it
    again, then the plan adds it) and drops the waiting mirror's settled mark (so no no-op skips it)."""
    other = add_live(store, 1, mirror="other", cont_sign="dup-sign")
    store.set_mirror_state("other", "/gone", 1, 1, settled="s-other")
    store.save_scan(M, [sf("a.jpg", 1), sf("b.jpg", 2, "rejected", reason="too small")])
    store.set_mirror_state(M, "/photos", 2, 2, settled="s-m")
    entry, jid = store.begin_add(M, "same_hq", h(1), str, (), (None, None), None)
    with pytest.raises(ContSignTakenError) as info:
        store.finish_add(jid, entry.id, "dup-sign", ["a.jpg"])
    assert info.value.other_folder == "/gone"
    store.abort_add(jid, entry.id, "taken")
    store.set_verdict(M, "a.jpg", "rejected", "taken", taken_by="dup-sign")
    add_live(store, 3, mirror="other", cont_sign="unrelated")
    jid = store.begin_delete("other", [other.id])
    assert store.known_files(M)["a.jpg"].hashed_at_ns == 5  # still trusted while the delete is under way
    store.finish_delete(jid)
    known = store.known_files(M)
    assert known["a.jpg"].hashed_at_ns == 0 and known["a.jpg"].verdict == "rejected"  # untrusted: read again
    assert known["b.jpg"].hashed_at_ns == 5  # a refusal of its own stays
    assert store.mirror_state(M).settled is None and store.mirror_state("other").settled == "s-other"
    assert raw(store, "SELECT count(*) FROM files WHERE taken_by IS NOT NULL") == [(0,)]
    # A file scanned anew is judged anew: a rescan clears what it waited on.
    store.set_verdict(M, "b.jpg", "rejected", "taken", taken_by="unrelated")
    store.save_scan(M, [sf("b.jpg", 2, "rejected", reason="too small")])
    assert raw(store, "SELECT count(*) FROM files WHERE taken_by IS NOT NULL") == [(0,)]


def test_abort_add_forgets_the_entry_and_records_why(store: Store) -> None:
    store.save_scan(M, [sf("a.jpg", 1)])
    entry, jid = store.begin_add(M, "same_hq", h(1), str, (), (None, None), None)
    store.map_files(M, ["a.jpg"], entry.id)
    store.abort_add(jid, entry.id, "216201: image format error")
    assert store.entries(M) == {}
    assert store.known_files(M)["a.jpg"].entry_id is None  # the file record survives
    item = store.journal_item(jid)
    assert item is not None and (item.state, item.error) == ("failed", "216201: image format error")
    assert item.finished_at is not None


def test_abort_add_refuses_a_live_entry_and_wrong_ids(store: Store) -> None:
    entry, jid = store.begin_add(M, "same_hq", h(1), str, (), (None, None), None)
    with pytest.raises(ManifestError, match="not 999"):
        store.abort_add(jid, 999, "x")
    upd = store.begin_update(M, add_live(store, 2).id, "b", (), (None, None))
    with pytest.raises(ManifestError, match="is an update, not an add"):
        store.abort_add(upd, entry.id, "x")
    with pytest.raises(ManifestError, match="no journal item 4242"):
        store.finish_add(4242, entry.id, "s", [])
    with pytest.raises(ManifestError, match="cont_sign"):
        store.finish_add(jid, entry.id, "", [])
    assert store.entries(M)[entry.id].state == "adding"


def test_fail_refuses_an_add(store: Store) -> None:
    entry, jid = store.begin_add(M, "same_hq", h(1), str, (), (None, None), None)
    with pytest.raises(ManifestError, match="use abort_add"):
        store.fail(jid, "x")
    assert [i.id for i in store.open_journal()] == [jid]


def test_entry_ids_are_never_reused(store: Store) -> None:
    entry = add_live(store, 1)
    jid = store.begin_delete(M, [entry.id])
    store.finish_delete(jid)
    again = add_live(store, 1)
    assert again.id > entry.id  # the old id is in a brief somewhere; never hand it out twice


# ---------------------------------------------------------------------- updates


def test_update_lifecycle(store: Store) -> None:
    store.save_scan(M, [sf("old.jpg", 1), sf("new.jpg", 1)])
    entry = add_live(store, 1, ("old.jpg",))
    jid = store.begin_update(M, entry.id, '{"id":1,"path":"new.jpg"}', (3, 4), (None, None))
    assert store.entries(M)[entry.id] == entry  # nothing changes before the gallery confirms
    [item] = store.open_journal()
    assert item.op == "update" and item.payload["cont_sign"] == entry.cont_sign
    assert item.payload["old"] == {"brief": entry.brief, "tags": [], "class_ids": [None, None]}
    store.finish_update(jid, ["new.jpg"])
    now = store.entries(M)[entry.id]
    assert (now.brief, now.tags, now.state) == ('{"id":1,"path":"new.jpg"}', (3, 4), "live")
    assert store.known_files(M)["new.jpg"].entry_id == entry.id
    assert store.open_journal() == []


def test_failed_update_leaves_the_entry_alone(store: Store) -> None:
    entry = add_live(store, 1)
    jid = store.begin_update(M, entry.id, "other brief", (9,), (None, None))
    store.fail(jid, "216630: invalid tags")
    assert store.entries(M)[entry.id] == entry
    assert store.journal_item(jid).error == "216630: invalid tags"  # type: ignore[union-attr]
    with pytest.raises(ManifestError, match="already failed"):
        store.finish_update(jid)


def test_only_live_entries_of_the_mirror_can_be_updated(store: Store) -> None:
    adding, _ = store.begin_add(M, "same_hq", h(1), str, (), (None, None), None)
    with pytest.raises(ManifestError, match="is adding"):
        store.begin_update(M, adding.id, "b", (), (None, None))
    live = add_live(store, 2)
    with pytest.raises(ManifestError, match="belongs to mirror"):
        store.begin_update("other", live.id, "b", (), (None, None))
    with pytest.raises(ManifestError, match="no entry 777"):
        store.begin_update(M, 777, "b", (), (None, None))


# ---------------------------------------------------------------------- deletes


def test_delete_lifecycle(store: Store) -> None:
    store.save_scan(M, [sf("a.jpg", 1), sf("b.jpg", 2), sf("c.jpg", 3)])
    a, b, c = add_live(store, 1, ("a.jpg",)), add_live(store, 2, ("b.jpg",)), add_live(store, 3, ("c.jpg",))
    jid = store.begin_delete(M, [a.id, b.id])
    entries = store.entries(M)
    assert (entries[a.id].state, entries[b.id].state, entries[c.id].state) == ("deleting", "deleting", "live")
    [item] = store.open_journal()
    assert item.op == "delete" and item.entry_ids == (a.id, b.id) and item.library == "same_hq"
    assert item.payload == {"cont_signs": ["sign-1", "sign-2"]}
    store.finish_delete(jid)
    assert list(store.entries(M)) == [c.id]
    known = store.known_files(M)
    assert (known["a.jpg"].entry_id, known["b.jpg"].entry_id, known["c.jpg"].entry_id) == (None, None, c.id)
    assert store.open_journal() == []


def test_a_failed_delete_leaves_entries_deleting(store: Store) -> None:
    a = add_live(store, 1)
    jid = store.begin_delete(M, [a.id])
    store.fail(jid, "gallery unreachable")
    assert store.entries(M)[a.id].state == "deleting"  # the next plan deletes it again
    store.finish_delete(store.begin_delete(M, [a.id]))
    assert store.entries(M) == {}


def test_begin_delete_refuses_bad_input_and_changes_nothing(store: Store) -> None:
    a = add_live(store, 1)
    b = add_live(store, 2, mirror="other")
    c = add_live(store, 3, library="similar")
    with pytest.raises(ManifestError, match=r"no entries \[404\]"):
        store.begin_delete(M, [a.id, 404])
    with pytest.raises(ManifestError, match="another mirror"):
        store.begin_delete(M, [a.id, b.id])
    with pytest.raises(ManifestError, match="span libraries"):
        store.begin_delete(M, [a.id, c.id])
    with pytest.raises(ManifestError, match="at least one"):
        store.begin_delete(M, [])
    assert {e.state for e in store.entries(M).values()} == {"live"}
    assert store.open_journal() == []


# ---------------------------------------------------------------------- journal across a crash


def test_open_journal_lists_intents_oldest_first_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    with Store.open(path) as s:
        done = add_live(s, 0)
        e1, j1 = s.begin_add(M, "same_hq", h(1), str, (5,), (None, None), "/spool/1.img")
        j2 = s.begin_delete(M, [done.id])
        e3, j3 = s.begin_add("other", "same_hq", h(3), str, (), (None, None), "/spool/3.img")
    with Store.open(path) as s:  # as the next run finds it
        items = s.open_journal()
        assert [i.id for i in items] == [j1, j2, j3]
        assert items[0].payload["spool"] == "/spool/1.img" and items[0].payload["tags"] == [5]
        assert items[1].payload["cont_signs"] == ["sign-0"]
        s.finish_add(j1, e1.id, "sign-1", ())
        s.finish_delete(j2)
        s.abort_add(j3, e3.id, "interrupted before the upload")
        assert s.open_journal() == []


_COMMIT_THEN_HANG = """
import sys, time
from pathlib import Path
from imgsync.manifest import Store
s = Store.open(Path(sys.argv[1]))
entry, jid = s.begin_add("photos", "same_hq", "ab" * 32, str, (), (None, None), "/spool/z.img")
print(jid, entry.id, flush=True)
time.sleep(60)  # "making the remote call" when the kill comes
"""


def test_a_committed_intent_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    with subprocess.Popen(
        [sys.executable, "-c", _COMMIT_THEN_HANG, str(path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "the child died before committing"
            jid, entry_id = map(int, line.split())
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Store.open(path) as s:
        [item] = s.open_journal()
        assert (item.id, item.entry_ids, item.payload["spool"]) == (jid, (entry_id,), "/spool/z.img")
        assert s.entries("photos")[entry_id].state == "adding"


# ---------------------------------------------------------------------- runs and status


def test_runs(tmp_path: Path) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    with Store.open(tmp_path / "m.sqlite3", clock=clock) as s:
        assert s.last_run(M) is None
        killed = s.start_run(M)
        clock.advance(10)
        run = s.start_run(M)  # the previous one never finished: its process died
        assert s.last_run(M).id == run  # type: ignore[union-attr]
        clock.advance(5)
        s.finish_run(run, "partial", {"added": 3, "failed": 1}, "1 file failed")
        last = s.last_run(M)
        assert last is not None
        assert (last.status, last.counts, last.error) == ("partial", {"added": 3, "failed": 1}, "1 file failed")
        assert last.started_at.timestamp() == 1_800_000_010.0 and last.finished_at.timestamp() == 1_800_000_015.0
        assert raw(s, f"SELECT status FROM runs WHERE id = {killed}") == [("interrupted",)]
        assert s.last_run("other") is None
        with pytest.raises(ManifestError, match="no run 99"):
            s.finish_run(99, "ok", {})


def test_finish_run_prunes_old_history(tmp_path: Path) -> None:
    clock = FakeClock()
    with Store.open(tmp_path / "m.sqlite3", clock=clock) as s:
        old = add_live(s, 1)
        _, open_jid = s.begin_add(M, "same_hq", h(2), str, (), (None, None), None)
        clock.advance(31 * 24 * 3600)
        for _ in range(205):
            s.finish_run(s.start_run(M), "ok", {})
        assert raw(s, "SELECT count(*) FROM runs") == [(200,)]
        assert [i.id for i in s.open_journal()] == [open_jid]  # intents are never pruned
        assert raw(s, "SELECT count(*) FROM journal") == [(1,)]
        assert old.id in s.entries(M)


def test_mirror_state(store: Store) -> None:
    assert store.mirror_state(M) is None
    store.set_mirror_state(M, "/data/photos", 64769, 10)
    first = store.mirror_state(M)
    assert first is not None and first.last_run_id is None
    run = store.start_run(M)
    store.set_mirror_state(M, "/data/photos2", 2050, 12)
    state = store.mirror_state(M)
    assert state is not None
    assert (state.folder, state.device, state.file_count, state.last_run_id) == ("/data/photos2", 2050, 12, run)


def test_counts(store: Store) -> None:
    store.save_scan(
        M,
        [
            sf("synced.jpg", 1),
            sf("synced-copy.jpg", 1),
            sf("new.jpg", 2),
            sf("adding.jpg", 3),
            sf("bad.jpg", 4, "rejected", reason="too small"),
            sf("busy.jpg", 5, "unstable"),
            sf("locked.jpg", 6, "error", reason="permission denied"),
        ],
    )
    add_live(store, 1, ("synced.jpg", "synced-copy.jpg"))
    entry, _ = store.begin_add(M, "same_hq", h(3), str, (), (None, None), None)
    store.map_files(M, ["adding.jpg"], entry.id)
    store.save_scan("other", [sf("x.jpg", 9)])
    assert store.counts(M) == {"synced": 2, "pending": 3, "rejected": 1, "error": 1, "files": 7, "entries": 1}
    assert store.counts("nobody") == {"synced": 0, "pending": 0, "rejected": 0, "error": 0, "files": 0, "entries": 0}


def test_mirror_names(store: Store) -> None:
    store.save_scan("b", [sf("x.jpg")])
    add_live(store, 1, mirror="a")
    store.start_run("c")
    store.set_mirror_state("d", "/d", 1, 0)
    assert store.mirror_names() == ["a", "b", "c", "d"]


# ---------------------------------------------------------------------- scale and concurrency


def test_save_scan_of_100k_files(tmp_path: Path) -> None:
    files = [sf(f"dir{i % 100}/image {i:06d}.jpg", i, size=i, inode=i) for i in range(100_000)]
    with Store.open(tmp_path / "m.sqlite3") as s:
        t0 = time.perf_counter()
        s.save_scan(M, files)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        known = s.known_files(M)
        read = time.perf_counter() - t0
        changed = [sf(f.path, f"v2-{i}", size=f.size + 1, inode=f.inode) for i, f in enumerate(files[:50_000])]
        gone = [f.path for f in files[50_000:60_000]]
        t0 = time.perf_counter()
        s.save_scan(M, changed, gone=gone)
        second = time.perf_counter() - t0
        print(
            f"\nsave_scan 100k new rows: {first:.2f}s; known_files 100k: {read:.2f}s; "
            f"rescan 50k changed + 10k gone: {second:.2f}s"
        )
        assert len(known) == 100_000 and known["dir7/image 000007.jpg"].size == 7
        after = s.known_files(M)
        assert len(after) == 90_000
        assert after["dir0/image 000000.jpg"].content_hash == h("v2-0")
        assert after["dir99/image 099999.jpg"].content_hash == h(99_999)


def test_readers_see_whole_transactions_while_one_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    Store.open(path).close()
    rounds, width = 40, 300
    stop = threading.Event()
    problems: list[str] = []
    reads = [0, 0, 0]

    def write() -> None:
        with Store.open(path) as w:
            for r in range(1, rounds + 1):
                w.save_scan(M, [sf(f"f{i}.jpg", i, size=r) for i in range(width)])
                w.start_run(M)

    def read(slot: int) -> None:
        with Store.open(path) as s:
            while not stop.is_set():
                try:
                    sizes = {f.size for f in s.known_files(M).values()}
                    counts = s.counts(M)
                except Exception as e:  # noqa: BLE001 - any error is a failure of the test
                    problems.append(repr(e))
                    return
                if len(sizes) > 1:
                    problems.append(f"saw a half-written scan: sizes {sorted(sizes)[:5]}")
                if counts["files"] not in (0, width):
                    problems.append(f"saw {counts['files']} files")
                reads[slot] += 1

    readers = [threading.Thread(target=read, args=(i,)) for i in range(3)]
    for t in readers:
        t.start()
    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout=120)
    stop.set()
    for t in readers:
        t.join(timeout=30)
    assert not writer.is_alive()
    assert problems == []
    assert all(n > 0 for n in reads)
    with Store.open(path) as s:
        assert {f.size for f in s.known_files(M).values()} == {rounds}


def test_two_writers_wait_for_each_other_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    Store.open(path).close()
    errors: list[BaseException] = []

    def work(mirror: str) -> None:
        try:
            with Store.open(path) as s:
                for i in range(30):
                    entry, jid = s.begin_add(mirror, "same_hq", h(i), str, (), (None, None), None)
                    s.finish_add(jid, entry.id, f"{mirror}-{i}", ())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(m,)) for m in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with Store.open(path) as s:
        assert len(s.entries("one")) == len(s.entries("two")) == 30


# ---------------------------------------------------------------------- the state-dir lock


def test_second_lock_holder_is_refused_with_who_holds_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with StateLock(state) as lock:
        assert lock.held and (state / "imgsync.lock").is_file()
        with pytest.raises(LockHeldError) as info:
            StateLock(state).acquire()
        message = str(info.value)
        assert f"pid {os.getpid()}" in message and "started 20" in message
        assert str(state) in message and "wait for it or stop it" in message
        assert info.value.exit_code == 7
    with StateLock(state):  # released on exit
        pass


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from imgsync.manifest import StateLock
lock = StateLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(state)], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
            with pytest.raises(LockHeldError, match=f"pid {proc.pid}, started "):
                StateLock(state).acquire()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with StateLock(state) as lock:  # no stale lock after kill -9
        assert lock.held
