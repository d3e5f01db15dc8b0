"""Exit 0 means in step: a one-shot reconcile waits (bounded) for files saved a moment ago and syncs
them in the same run; a file that keeps changing stays pending and the run does not exit 0."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from click.testing import CliRunner

from conftest import make_image
from imgsync.cli import cli
from imgsync.manifest import Store


def invoke(state: Path, *args: str):
    return CliRunner().invoke(cli, ["--state-dir", str(state), *args], catch_exceptions=False)


def test_files_saved_just_before_the_run_are_synced_in_it(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.jpg").write_bytes(make_image(i))  # mtime = now: too young to trust at first
    (folder / "0.jpg").write_bytes(make_image(50))  # and one overwritten at once
    result = invoke(tmp_path / "state", "reconcile", str(folder), "--json")
    assert result.exit_code == 0, result.output + result.stderr
    (report,) = json.loads(result.stdout)
    assert report["counts"]["added"] == 5 and report["pending"] == []
    again = invoke(tmp_path / "state", "reconcile", str(folder), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)[0]["counts"]["added"] == 0


def test_without_json_the_wait_is_said_in_one_line(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(make_image(1))
    result = invoke(tmp_path / "state", "reconcile", str(folder))
    assert result.exit_code == 0, result.output + result.stderr
    assert "waiting up to 10 s for 1 file(s) still being written" in result.stderr
    assert "1 added" in result.stdout


def test_a_file_that_keeps_growing_stays_pending_and_is_uploaded_whole_later(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "done.jpg").write_bytes(make_image(1))
    final = make_image(2, size=(1600, 1200), quality=95)  # written slowly while the run looks at it
    growing = folder / "growing.jpg"
    stop = threading.Event()

    def write_slowly() -> None:
        with open(growing, "wb") as f:
            pos = 0
            while not stop.is_set() and pos < len(final) - 1024:
                f.write(final[pos : pos + 256])
                f.flush()
                pos += 256
                stop.wait(0.05)
            f.write(final[pos:])  # the rest at once, after the run

    writer = threading.Thread(target=write_slowly)
    writer.start()
    try:
        result = invoke(tmp_path / "state", "reconcile", str(folder), "--json")
    finally:
        stop.set()
        writer.join()
    assert len(final) > 256 * 20 * 12, "the writer must outlast the run's 10 s wait"
    assert result.exit_code == 1, result.output + result.stderr
    (report,) = json.loads(result.stdout)
    assert report["counts"]["added"] == 1  # done.jpg, after waiting for it
    assert [p["path"] for p in report["pending"]] == ["growing.jpg"]

    # Written out now: a later run uploads the whole file (its hash is the finished file's).
    later = invoke(tmp_path / "state", "reconcile", str(folder), "--json")
    assert later.exit_code == 0, later.output + later.stderr
    with Store.open(tmp_path / "state" / "manifest.sqlite3") as store:
        known = store.known_files(str(json.loads(later.stdout)[0]["mirror"]))
    assert known["growing.jpg"].content_hash == hashlib.sha256(final).hexdigest()
    assert known["growing.jpg"].entry_id is not None
