"""The reconcile / status / search commands as a user runs them, on the embedded local gallery."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from click.testing import CliRunner

from imgsync.cli import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def invoke(state: Path, *args: str):
    return CliRunner().invoke(cli, ["--state-dir", str(state), *args], catch_exceptions=False)


def test_quick_start_mirrors_the_examples_and_finds_the_query(tmp_path):
    folder = tmp_path / "catalogue"
    shutil.copytree(EXAMPLES / "catalogue", folder)
    state = tmp_path / "state"

    dry = invoke(state, "reconcile", str(folder), "--dry-run")
    assert dry.exit_code == 0 and dry.output.count("+ ") == 6
    assert not (state / "manifest.sqlite3").exists()  # a dry run changes nothing locally

    first = invoke(state, "reconcile", str(folder), "--json")
    assert first.exit_code == 0, first.output
    (report,) = json.loads(first.stdout)
    assert report["counts"]["added"] == 6

    again = invoke(state, "reconcile", str(folder), "--json")
    assert json.loads(again.stdout)[0]["counts"]["added"] == 0

    found = invoke(state, "search", str(EXAMPLES / "query.jpg"), "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert "boat.jpg" in hits[0]["brief"] and hits[0]["score"] > 0.9

    status = invoke(state, "status", "--json")
    (mirror,) = json.loads(status.stdout)["mirrors"]
    assert mirror["counts"]["synced"] == 6


def test_rejected_file_gives_exit_1_and_names_the_file(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    shutil.copy(EXAMPLES / "catalogue" / "boat.jpg", folder / "ok.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    for f in folder.iterdir():  # old enough to be judged now, not left for a later run as still changing
        os.utime(f, (1_600_000_000, 1_600_000_000))
    result = invoke(tmp_path / "state", "reconcile", str(folder))
    assert result.exit_code == 1
    assert "broken.jpg" in result.output


def test_second_reconcile_while_locked_gets_exit_7(tmp_path):
    from imgsync.manifest import StateLock

    folder = tmp_path / "pics"
    folder.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    with StateLock(state):
        result = CliRunner().invoke(cli, ["--state-dir", str(state), "reconcile", str(folder)])
    assert result.exit_code == 7 and "holds" in result.output


def test_unknown_target_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["--state-dir", str(tmp_path), "reconcile", "nosuchmirror"])
    assert result.exit_code == 2


def test_pointing_the_config_at_another_gallery_is_refused_until_rebind(tmp_path: Path) -> None:
    """Entries recorded for one gallery must not make images look uploaded to another (the cloud after
    trying the embedded gallery, another account, a deleted embedded gallery)."""
    import shutil

    from conftest import make_image

    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(2):
        p = folder / f"{i}.jpg"
        p.write_bytes(make_image(i))
        t = p.stat().st_mtime_ns - 10**10
        os.utime(p, ns=(t, t))
    (tmp_path / "empty.toml").write_text("")
    env = {"IMGSYNC_STATE_DIR": str(tmp_path / "state"), "IMGSYNC_CONFIG": str(tmp_path / "empty.toml")}
    first = CliRunner().invoke(cli, ["reconcile", str(folder)], env=env)
    assert first.exit_code == 0, first.output
    shutil.rmtree(tmp_path / "state" / "gallery")  # the embedded gallery is gone: a new, empty one
    refused = CliRunner().invoke(cli, ["reconcile", str(folder)], env=env)
    assert refused.exit_code == 2 and "--rebind" in refused.output and "2 entries" in refused.output
    # a dry run says what the run would: refused, and with --rebind every image added
    dry = CliRunner().invoke(cli, ["reconcile", "--dry-run", str(folder)], env=env)
    assert dry.exit_code == 2 and "--rebind" in dry.output, dry.output
    dry = CliRunner().invoke(cli, ["reconcile", "--dry-run", "--rebind", str(folder)], env=env)
    assert dry.exit_code == 0 and dry.output.count("+ ") == 2 and "would forget 2 entries" in dry.output, dry.output
    assert CliRunner().invoke(cli, ["reconcile", str(folder)], env=env).exit_code == 2  # and it forgot nothing
    rebound = CliRunner().invoke(cli, ["reconcile", "--rebind", "--json", str(folder)], env=env)
    assert rebound.exit_code == 0, rebound.output
    assert json.loads(rebound.stdout)[0]["counts"]["added"] == 2
    again = CliRunner().invoke(cli, ["reconcile", "--json", str(folder)], env=env)
    assert again.exit_code == 0 and json.loads(again.stdout)[0]["counts"]["added"] == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_run_that_never_reached_a_gallery_binds_the_state_dir_to_nothing(tmp_path, gallery_server):
    """A wrong port, then refused credentials, then the right gallery: no --rebind is asked for, because
    no gallery ever acknowledged an entry before."""
    from conftest import make_image

    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.jpg").write_bytes(make_image(i))
        os.utime(folder / f"{i}.jpg", (1_600_000_000, 1_600_000_000))
    config = tmp_path / "config.toml"

    def run(endpoint: str, secret: str):
        config.write_text(
            f'[gallery]\nendpoint = "{endpoint}"\napi_key = "{gallery_server.api_key}"\n'
            f'secret_key = "{secret}"\n'
            f'[[mirror]]\nname = "m"\nfolder = "{folder}"\n'
        )
        config.chmod(0o600)
        return CliRunner().invoke(
            cli,
            ["--state-dir", str(tmp_path / "state"), "--config", str(config), "reconcile", "--json"],
            catch_exceptions=False,
        )

    nobody = run(f"http://127.0.0.1:{_free_port()}", gallery_server.secret_key)
    assert nobody.exit_code == 3, nobody.output
    refused = run(gallery_server.url, "not-the-secret")
    assert refused.exit_code == 4, refused.output
    right = run(gallery_server.url, gallery_server.secret_key)
    assert right.exit_code == 0, right.output
    counts = json.loads(right.stdout)[0]["counts"]
    assert counts["added"] + counts["recovered"] == 2  # the add left in flight by the first run is finished
    # Now it is bound. Another gallery is refused (exit 2, --rebind) once it has answered: one that does
    # not answer is a wrong port, not a new gallery to move to (test_a_mistyped_key_...).
    moved = run(f"http://127.0.0.1:{_free_port()}", gallery_server.secret_key)
    assert moved.exit_code == 3 and "--rebind" not in moved.output, moved.output
    back = run(gallery_server.url, gallery_server.secret_key)
    assert back.exit_code == 0 and json.loads(back.stdout)[0]["counts"]["added"] == 0, back.output


def test_a_mistyped_key_is_refused_credentials_and_rebind_forgets_nothing_for_it(tmp_path, gallery_server):
    """A typo in the API key makes another gallery identity (the key names the app, and with it the
    library). It must end as refused credentials (exit 4), not as "another gallery: run --rebind"; and
    --rebind with it must forget nothing: the entries still live in the gallery, and after the key is
    mended a run finds the library in step (no orphans, no re-uploads)."""
    from conftest import make_image

    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(make_image(30 + i))
        os.utime(folder / f"{i}.jpg", (1_600_000_000, 1_600_000_000))
    config = tmp_path / "config.toml"

    def run(api_key: str, *args: str):
        config.write_text(
            f'[gallery]\nendpoint = "{gallery_server.url}"\napi_key = "{api_key}"\n'
            f'secret_key = "{gallery_server.secret_key}"\n[[mirror]]\nname = "m"\nfolder = "{folder}"\n'
        )
        config.chmod(0o600)
        return CliRunner().invoke(
            cli,
            ["--state-dir", str(tmp_path / "state"), "--config", str(config), "reconcile", "--json", *args],
            catch_exceptions=False,
        )

    assert run(gallery_server.api_key).exit_code == 0
    (folder / "0.jpg").rename(folder / "renamed.jpg")  # work for the next runs: an update
    (folder / "2.jpg").unlink()  # and a delete
    typo = gallery_server.api_key + "x"
    for args in ((), ("--rebind",)):
        refused = run(typo, *args)
        assert refused.exit_code == 4, refused.output
        assert "--rebind" not in refused.output and "forgot" not in refused.output
    mended = run(gallery_server.api_key)
    assert mended.exit_code == 0, mended.output
    counts = json.loads(mended.stdout)[0]["counts"]
    assert (counts["added"], counts["updated"], counts["deleted"]) == (0, 1, 1), counts
    from imgsync.localgallery.engine import Engine

    eng = Engine(gallery_server.data_dir, read_only=True)
    try:
        held = sorted(json.loads(str(e["brief"]))["path"] for e in eng.entries("same_hq"))
    finally:
        eng.close()
    assert held == ["1.jpg", "renamed.jpg"]  # no orphan of 2.jpg, no stale brief of 0.jpg


def test_a_file_name_that_is_not_utf8_leads_back_to_its_exact_bytes(tmp_path):
    """The brief (what the gallery returns with each hit) and every --json output carry the name's bytes
    reversibly: json.loads then os.fsencode gives the file name back."""
    from conftest import make_image

    folder = tmp_path / "pics"
    folder.mkdir()
    raw = b"bad_\xff\xfe.jpg"
    (folder / os.fsdecode(raw)).write_bytes(make_image(7))
    os.utime(folder / os.fsdecode(raw), (1_600_000_000, 1_600_000_000))
    state = tmp_path / "state"
    assert invoke(state, "reconcile", str(folder)).exit_code == 0
    query = tmp_path / "q.jpg"
    query.write_bytes(make_image(7))
    found = invoke(state, "search", str(query), "--json")
    assert found.exit_code == 0
    (hit,) = json.loads(found.stdout_bytes.decode("utf-8"))  # valid UTF-8, strictly
    assert os.fsencode(json.loads(hit["brief"])["path"]) == raw
    assert [os.fsencode(p) for p in hit["paths"]] == [os.fsencode(folder) + b"/" + raw]
    status = json.loads(invoke(state, "status", "--json").stdout_bytes.decode("utf-8"))
    assert status["mirrors"][0]["counts"]["synced"] == 1


def test_verbose_names_what_looks_like_an_image_but_is_not_once_and_nothing_else(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "pics"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")
    shutil.copy(EXAMPLES / "catalogue" / "boat.jpg", folder / "boat.jpg")
    os.utime(folder / "boat.jpg", (1_600_000_000, 1_600_000_000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSYNC_")}
    env.update(IMGSYNC_STATE_DIR=str(tmp_path / "state"), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "imgsync", "-v", "reconcile", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("pipe.jpg: a FIFO, not an image file: skipped") == 1
    assert "alembic" not in done.stderr and "faiss" not in done.stderr  # -v is imgsync's own lines


def _malformed_mpo_jpeg() -> bytes:
    """A good JPEG with a broken MPF (multi-picture) segment: Pillow reads it, warning twice ("Corrupt EXIF
    data", "malformed MPO file"), as it does for some cameras' files."""
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 30, 30)).save(buf, "JPEG")
    jpg = buf.getvalue()
    seg = b"MPF\x00" + b"II*\x00" + b"\x08\x00\x00\x00" + b"\xff" * 20
    return jpg[:2] + b"\xff\xe2" + struct.pack(">H", len(seg) + 2) + seg + jpg[2:]


def test_pillow_warnings_are_the_files_own_note_at_v_and_never_printed_raw(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "camera.jpg").write_bytes(_malformed_mpo_jpeg())
    os.utime(folder / "camera.jpg", (1_600_000_000, 1_600_000_000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSYNC_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path), PYTHONWARNINGS="default")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "imgsync",
                "--state-dir",
                str(tmp_path / f"s{len(args)}"),
                *args,
                "reconcile",
                str(folder),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    plain = run()
    assert plain.returncode == 0 and "1 added" in plain.stdout, plain.stderr
    assert "EXIF" not in plain.stderr and "MPO" not in plain.stderr  # not raw, not from the embedded gallery
    verbose = run("-v")
    assert verbose.returncode == 0, verbose.stderr
    lines = [line for line in verbose.stderr.splitlines() if "camera.jpg: Pillow: Corrupt EXIF data" in line]
    assert len(lines) == 1 and "malformed MPO file" in lines[0]


def test_a_folder_mirrored_without_a_config_is_a_mirror_by_name_everywhere(tmp_path):
    """Zero-config carries over: the folder is remembered in the state dir under its own name, said once;
    later commands take that name, and a plain `reconcile` includes it."""
    from conftest import make_image

    folder = tmp_path / "Holiday Photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(make_image(1))
    os.utime(folder / "a.jpg", (1_600_000_000, 1_600_000_000))
    state = tmp_path / "state"
    first = invoke(state, "reconcile", str(folder))
    assert first.exit_code == 0 and first.stderr.count("remembered as mirror 'Holiday_Photos'") == 1
    again = invoke(state, "reconcile", str(folder))
    assert "remembered" not in again.stderr  # said once
    by_name = invoke(state, "reconcile", "Holiday_Photos", "--json")
    assert by_name.exit_code == 0 and json.loads(by_name.stdout)[0]["mirror"] == "Holiday_Photos"
    everything = invoke(state, "reconcile", "--json")
    assert [r["mirror"] for r in json.loads(everything.stdout)] == ["Holiday_Photos"]
    status = json.loads(invoke(state, "status", "--json").stdout)
    assert status["mirrors"][0]["remembered"] and status["mirrors"][0]["counts"]["synced"] == 1


def test_a_copy_of_a_removed_folder_is_added_once_the_removal_is_confirmed(tmp_path):
    """Synced, removed (its deletes withheld), then a copy synced under another name: the copy's files are
    refused as the old mirror's images, with the way out; `--force` on the old folder deletes its entries
    and drops the remembered mirror, and the copy's next run adds them (no edit of the copy needed)."""
    from conftest import make_image

    old, copy = tmp_path / "shots", tmp_path / "shots copy"
    old.mkdir()
    for i in range(3):
        (old / f"{i}.jpg").write_bytes(make_image(i))
        os.utime(old / f"{i}.jpg", (1_600_000_000, 1_600_000_000))
    state = tmp_path / "state"
    assert invoke(state, "reconcile", str(old)).exit_code == 0
    shutil.copytree(old, copy)
    shutil.rmtree(old)
    refused = invoke(state, "reconcile", str(copy))
    assert refused.exit_code == 1, refused.output
    assert refused.stdout.count(f"its folder {old} is gone") == 3
    assert "`imgsync reconcile shots --force` deletes its entries" in refused.stdout
    withheld = invoke(state, "reconcile", "shots")
    assert withheld.exit_code == 6 and "nothing deleted" in withheld.stdout
    forced = invoke(state, "reconcile", str(old), "--force")  # the removed folder's path names its mirror
    assert forced.exit_code == 0, forced.output
    assert "3 deleted" in forced.stdout and f"folder {old} removed (--force)" in forced.stdout
    assert "shots: no longer remembered" in forced.stderr
    everything = invoke(state, "reconcile", "--json")  # the copy only: the removed folder is not a mirror now
    (report,) = json.loads(everything.stdout)
    assert everything.exit_code == 0 and report["mirror"] == "shots_copy" and report["counts"]["added"] == 3
    status = json.loads(invoke(state, "status", "--json").stdout)
    counts = {m["mirror"]: m["counts"] for m in status["mirrors"]}
    assert counts == {"shots_copy": counts["shots_copy"]}, "the dropped mirror has nothing left to show"
    assert counts["shots_copy"]["synced"] == 3


def test_a_folder_an_older_imgsync_mirrored_keeps_its_name_and_records(tmp_path):
    """Before mirrors were remembered, `reconcile FOLDER` named the mirror "<name>-<hash>": such a folder
    keeps that name (its manifest records are filed under it), so nothing is uploaded again."""
    from conftest import make_image
    from imgsync.config import adhoc_mirror, load_config
    from imgsync.embedded import open_gallery
    from imgsync.manifest import Store
    from imgsync.pipeline import reconcile_mirror

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(make_image(1))
    os.utime(folder / "a.jpg", (1_600_000_000, 1_600_000_000))
    state = tmp_path / "state"
    old = adhoc_mirror(folder)
    config = load_config(state_dir=state, env={})
    with Store.open(state / "manifest.sqlite3") as store, open_gallery(config) as gallery:
        from imgsync.embedded import gallery_identity
        from imgsync.pipeline import bind_gallery

        bind_gallery(store, gallery_identity(config))
        assert len(reconcile_mirror(old, store, gallery, spool_dir=state / "spool").report.added) == 1
    now = invoke(state, "reconcile", str(folder), "--json")
    (report,) = json.loads(now.stdout)
    assert report["mirror"] == old.name and report["counts"]["added"] == 0


def test_a_line_said_while_the_progress_bar_is_drawn_gets_a_line_of_its_own(tmp_path):
    """On a terminal, early adds open the bar while the folder is walked; the settle wait's line that
    follows must not be written onto the bar's line (a real process on a pseudo-terminal)."""
    import pty
    import subprocess
    import sys
    import time

    from conftest import make_image

    folder = tmp_path / "pics"
    folder.mkdir()
    old = time.time_ns() - 10**10
    for i in range(5):
        p = folder / f"{i}.jpg"
        p.write_bytes(make_image(i))
        os.utime(p, ns=(old, old))
    young = folder / "young.jpg"
    young.write_bytes(make_image(99))
    # Young for a while yet: the run waits for it to settle (within its 10 s) even if the process takes
    # seconds to start on a busy machine; an mtime of "now" could be settled by the time the scan sees it.
    future = time.time_ns() + 6 * 10**9
    os.utime(young, ns=(future, future))
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "imgsync", "--state-dir", str(tmp_path / "state"), "reconcile", str(folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
        cwd=tmp_path,
    ) as proc:
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the process closed the terminal's last writer
                break
            if not chunk:
                break
            shown += chunk
        os.close(primary)
        assert proc.wait() == 0 and proc.stdout is not None
        assert proc.stdout.read() == b"pics: 6 added, 0 updated, 0 deleted\n"
    waiting = shown.index(b"pics: waiting up to")
    assert b"pics  [" in shown[:waiting]  # the bar was drawn first ...
    assert shown[:waiting].endswith(b"\n")  # ... and its line ended before the settle wait's line
    assert b"pics  [" in shown[waiting:]  # and the bar is drawn again below it


def test_a_mirror_no_longer_configured_shows_in_status_while_its_entries_live(tmp_path):
    """Removing a remembered mirror's table by hand stops mirroring it but deletes nothing: status keeps
    showing it (its entries are still in the gallery), as "no longer configured"."""
    from conftest import make_image
    from imgsync.remembered import forget

    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(make_image(1))
    os.utime(folder / "a.jpg", (1_600_000_000, 1_600_000_000))
    state = tmp_path / "state"
    assert invoke(state, "reconcile", str(folder)).exit_code == 0
    forget(state, "shots")
    shown = invoke(state, "status")
    assert "shots (no longer configured): 1 synced" in shown.stdout, shown.output


def test_library_is_changed_by_a_real_run_only_and_never_ignored(tmp_path: Path) -> None:
    """`reconcile FOLDER --library L --dry-run` shows the move (every image added to L, deleted from the
    old library) without remembering it: otherwise the next plain run (cron, watch) would make it. And
    --library where it cannot apply is an error, not silently ignored."""
    from conftest import make_image

    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.jpg").write_bytes(make_image(40 + i))
        os.utime(folder / f"{i}.jpg", (1_600_000_000, 1_600_000_000))
    (tmp_path / "empty.toml").write_text("")
    env = {"IMGSYNC_STATE_DIR": str(tmp_path / "state"), "IMGSYNC_CONFIG": str(tmp_path / "empty.toml")}

    def reconcile(*args: str):
        return CliRunner().invoke(cli, ["reconcile", *args], env=env)

    assert reconcile(str(folder)).exit_code == 0
    remembered = (tmp_path / "state" / "mirrors.toml").read_text()
    dry = reconcile(str(folder), "--library", "similar", "--dry-run")
    assert dry.exit_code == 0 and dry.output.count("+ ") == 2 and dry.output.count("- ") == 2, dry.output
    assert (tmp_path / "state" / "mirrors.toml").read_text() == remembered
    after = reconcile("--json")
    assert after.exit_code == 0 and json.loads(after.stdout)[0]["counts"]["added"] == 0, after.output
    alone = reconcile("--library", "similar")
    assert alone.exit_code == 2 and "FOLDER" in alone.output, alone.output
    config = tmp_path / "config.toml"
    config.write_text(f'[[mirror]]\nname = "fixed"\nfolder = "{folder}"\nlibrary = "same_hq"\n')
    configured = CliRunner().invoke(
        cli, ["--config", str(config), "reconcile", str(folder), "--library", "similar", "--dry-run"], env=env
    )
    assert configured.exit_code == 2 and "change it there" in configured.output, configured.output
    moved = reconcile(str(folder), "--library", "similar", "--json")
    assert moved.exit_code == 0 and json.loads(moved.stdout)[0]["counts"]["added"] == 2, moved.output
    assert 'library = "similar"' in (tmp_path / "state" / "mirrors.toml").read_text()


def test_control_characters_in_names_are_shown_escaped_one_line_per_problem(tmp_path: Path) -> None:
    """A newline in a name must not split a problem over two lines, nor an escape sequence reach the
    terminal (piped, click would drop it and show a name that is not the file's); --json keeps the name."""
    folder = tmp_path / "pics"
    folder.mkdir()
    names = ["bad\nname.jpg", "esc\x1b[31mred.jpg", "bell\x07\x85.jpg"]
    for name in names:
        (folder / name).write_bytes(b"not an image at all")
        os.utime(folder / name, (1_600_000_000, 1_600_000_000))
    (tmp_path / "empty.toml").write_text("")
    env = {"IMGSYNC_STATE_DIR": str(tmp_path / "state"), "IMGSYNC_CONFIG": str(tmp_path / "empty.toml")}
    dry = CliRunner().invoke(cli, ["reconcile", "--dry-run", str(folder)], env=env)
    done = CliRunner().invoke(cli, ["reconcile", str(folder)], env=env)
    status = CliRunner().invoke(cli, ["status"], env=env)
    assert done.exit_code == 1, done.output
    for result in (dry, done, status):
        problems = [line.strip() for line in result.output.splitlines() if line.strip().startswith("! ")]
        assert sorted(p.split(":")[0] for p in problems) == [
            "! bad\\nname.jpg",
            "! bell\\x07\\x85.jpg",
            "! esc\\x1b[31mred.jpg",
        ], result.output
        assert "\x1b" not in result.output and "\x07" not in result.output
    as_json = CliRunner().invoke(cli, ["reconcile", "--json", str(folder)], env=env)
    assert sorted(r["path"] for r in json.loads(as_json.stdout)[0]["rejected"]) == sorted(names)


def test_a_run_killed_mid_way_shows_as_interrupted_not_running(tmp_path: Path) -> None:
    """kill -9 (or a full disk) leaves the run's record "running" until the next run marks it; status says
    "interrupted" when no live process holds the state dir, and "running" while one does."""
    import subprocess
    import sys
    import time

    from conftest import make_image
    from imgsync.manifest import lite

    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(make_image(50))
    os.utime(folder / "a.jpg", (1_600_000_000, 1_600_000_000))
    state = tmp_path / "state"
    env = {"IMGSYNC_STATE_DIR": str(state), "IMGSYNC_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    assert CliRunner().invoke(cli, ["reconcile", str(folder)], env=env).exit_code == 0
    with lite.LiteManifest(state / "manifest.sqlite3") as m, m.write() as con:
        lite.start_run(con, "pics", time.time())  # what a killed run leaves
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (state / "imgsync.lock").write_text(f"pid {dead.pid}\n")  # the lock file still names the dead holder
    out = CliRunner().invoke(cli, ["status", "--json"], env=env).stdout
    assert json.loads(out)["mirrors"][0]["last_run"]["status"] == "interrupted", out
    (state / "imgsync.lock").write_text(f"pid {os.getpid()}\n")  # a live holder: a run at work
    out = CliRunner().invoke(cli, ["status", "--json"], env=env).stdout
    assert json.loads(out)["mirrors"][0]["last_run"]["status"] == "running", out
