"""`imgsync doctor` against a real local gallery over HTTP, real config files, real folders and real
manifests, in good and broken setups. Fault injection only where the machine cannot produce the fault
(an unreadable folder when the tests run as root, a small inotify limit, a skewed clock)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from conftest import make_image
from imgsync.cli import cli
from imgsync.clock import FakeClock
from imgsync.config import load_config
from imgsync.doctor import (
    DoctorReport,
    HttpGalleryProbe,
    SchemaInfo,
    check_clock,
    check_folder,
    check_inotify,
    check_manifest,
    check_token_scope,
    count_directories,
    judge_schema,
    open_configured_gallery,
    run_doctor,
    schema_info,
)
from imgsync.libraries import LIBRARIES
from imgsync.localgallery.server import start_in_thread
from imgsync.manifest import Store
from imgsync.manifest.migrate import find_scripts

KEY, SECRET = "doctor-ak", "doctor-sk-0123456789"


@pytest.fixture
def partial_gallery(tmp_path: Path) -> Iterator[object]:
    """A local gallery whose account has only same_hq and similar (the others answer 216017)."""
    running = start_in_thread(tmp_path / "g", keys=[(KEY, SECRET)], libraries=("same_hq", "similar"))
    try:
        yield running
    finally:
        running.stop()


class Setup:
    """A config file, a mirror folder with images in subfolders, a state dir."""

    def __init__(self, tmp_path: Path, endpoint: str, *, secret: str = SECRET, library: str = "same_hq") -> None:
        self.root = tmp_path
        self.folder = tmp_path / "pics"
        for i, sub in enumerate(("", "a", "a/b", "c")):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
            (self.folder / sub / f"{i}.jpg").write_bytes(make_image(i))
        self.state = tmp_path / "state"
        self.config = tmp_path / "config.toml"
        self.write(endpoint, secret=secret, library=library)

    def write(self, endpoint: str, *, secret: str = SECRET, library: str = "same_hq") -> None:
        self.config.write_text(
            f'[gallery]\nendpoint = "{endpoint}"\napi_key = "{KEY}"\nsecret_key = "{secret}"\n\n'
            f'[[mirror]]\nname = "pics"\nfolder = "{self.folder}"\nlibrary = "{library}"\n',
            encoding="utf-8",
        )
        self.config.chmod(0o600)

    def doctor(self, *args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(
            cli, ["--config", str(self.config), "--state-dir", str(self.state), "doctor", *args], catch_exceptions=False
        )

    def report(self, **kw: object) -> DoctorReport:
        return run_doctor(
            lambda: load_config(self.config, state_dir=self.state), open_gallery=open_configured_gallery, **kw
        )  # type: ignore[arg-type]


def by_check(findings: list[dict]) -> dict[str, tuple[str, str]]:
    """JSON findings by check name: (level, message)."""
    return {f["check"]: (f["level"], f["message"]) for f in findings}


# --------------------------------------------------------------------------- the command, end to end


def test_good_setup_passes_every_check(tmp_path: Path, partial_gallery) -> None:
    setup = Setup(tmp_path, partial_gallery.url)
    Store.open(setup.state / "manifest.sqlite3").close()  # a manifest at the current schema
    result = setup.doctor()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    checks = [line.split(":")[0] for line in lines[:-1]]
    assert checks == [
        "ok   config",
        "ok   folder pics",
        "ok   state_dir",
        "ok   manifest",
        "ok   gallery",
        "ok   token",
        "ok   library same_hq",
        "ok   clock",
        "ok   inotify",
    ]
    assert lines[-1] == "0 blocking, 0 warnings: ready to sync"
    assert "4 directories to watch" in result.output  # pics, a, a/b, c

    as_json = json.loads(setup.doctor("--json").output)
    assert as_json["ok"] is True and as_json["exit_code"] == 0
    assert {f["level"] for f in as_json["findings"]} == {"ok"}
    assert not (setup.state / "gallery").exists()  # doctor probed; it created nothing


def test_wrong_secret_is_a_token_failure_with_what_to_do(tmp_path: Path, partial_gallery) -> None:
    setup = Setup(tmp_path, partial_gallery.url, secret="not-the-secret-at-all")
    result = setup.doctor()
    assert result.exit_code == 4, result.output
    token = next(line for line in result.output.splitlines() if line.startswith("FAIL token"))
    assert "secret key does not match" in token and "IMGSYNC_SECRET_KEY" in token
    assert "not-the-secret-at-all" not in result.output and SECRET not in result.output
    assert "library" not in result.output  # nothing further can be learnt with a refused key


def test_library_not_enabled_is_recognised_and_explained(tmp_path: Path, partial_gallery) -> None:
    setup = Setup(tmp_path, partial_gallery.url, library="product")
    result = setup.doctor("--json")
    assert result.exit_code == 4
    found = by_check(json.loads(result.stdout)["findings"])
    level, message = found["library product"]
    assert level == "fail" and "216017" in message and "not been created" in message
    fix = next(f["fix"] for f in json.loads(result.stdout)["findings"] if f["check"] == "library product")
    assert "申请建库" in fix
    assert found["token"][0] == "ok"  # the key is fine; only the library is missing


def test_secret_in_a_readable_config_is_a_warning(tmp_path: Path, partial_gallery) -> None:
    setup = Setup(tmp_path, partial_gallery.url)
    setup.config.chmod(0o644)
    result = setup.doctor()
    assert result.exit_code == 0  # a warning does not block
    line = next(line for line in result.output.splitlines() if line.startswith("WARN config"))
    assert "other users may read it (mode 644)" in line and f"chmod 600 {setup.config}" in line
    assert "1 warning" in result.output.splitlines()[-1]


def test_unreachable_gallery_blocks_with_exit_3(tmp_path: Path) -> None:
    running = start_in_thread(tmp_path / "g", keys=[(KEY, SECRET)])
    url = running.url
    running.stop()  # nothing listens there any more
    result = Setup(tmp_path, url).doctor()
    assert result.exit_code == 3
    assert any(line.startswith("FAIL gallery") and "did not answer" in line for line in result.output.splitlines())


def test_broken_config_is_one_finding_exit_2(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "http://127.0.0.1:9")
    setup.config.write_text('[gallery]\nendpoint = "ftp://nope"\n', encoding="utf-8")
    result = setup.doctor()
    assert result.exit_code == 2
    assert result.output.splitlines()[0].startswith("FAIL config") and "gallery.endpoint" in result.output


def test_missing_keys_for_a_url_endpoint(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "http://127.0.0.1:9")
    setup.config.write_text('[gallery]\nendpoint = "http://127.0.0.1:9"\n', encoding="utf-8")
    result = setup.doctor()
    assert result.exit_code == 2 and "IMGSYNC_API_KEY" in result.output


def test_missing_folder_and_newer_manifest(tmp_path: Path, partial_gallery) -> None:
    setup = Setup(tmp_path, partial_gallery.url)
    shutil.rmtree(setup.folder)
    Store.open(setup.state / "manifest.sqlite3").close()
    con = sqlite3.connect(setup.state / "manifest.sqlite3")
    con.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    con.commit()
    con.close()
    result = setup.doctor("--json")
    report = json.loads(result.stdout)
    found = by_check(report["findings"])
    assert found["folder pics"][0] == "fail" and "does not exist" in found["folder pics"][1]
    assert found["manifest"][0] == "fail" and "9999_from_the_future" in found["manifest"][1]
    assert result.exit_code == 6  # the first blocking finding (the folder: a sync would withhold deletes) decides
    # The manifest was only read: still stamped with the unknown revision.
    con = sqlite3.connect(setup.state / "manifest.sqlite3")
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999_from_the_future",)]
    con.close()


def test_local_endpoint_without_data_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = CliRunner().invoke(cli, ["--state-dir", str(state), "doctor"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "will be created" in result.output
    assert not state.exists()


def test_local_endpoint_with_data_is_probed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    start_in_thread(state / "gallery").stop()  # as a first reconcile leaves it
    result = CliRunner().invoke(cli, ["--state-dir", str(state), "doctor"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "ok   library same_hq: enabled" in result.output


# --------------------------------------------------------------------------- single checks


def test_unreadable_folder_injected(tmp_path: Path) -> None:
    @contextmanager
    def denied(path: Path) -> Iterator[Iterator[os.DirEntry[str]]]:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
        yield iter(())  # pragma: no cover

    finding = check_folder("pics", tmp_path, scandir=denied)
    assert finding.level == "fail" and finding.exit_code == 6
    assert "permission denied" in finding.message.lower() and "chmod u+rx" in finding.fix


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder; the injected variant covers this")
def test_unreadable_folder_for_real(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    try:
        assert check_folder("locked", folder).level == "fail"
    finally:
        folder.chmod(0o700)


def test_folder_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "f.jpg"
    file.write_bytes(b"x")
    assert "is not a directory" in check_folder("f", file).message


def _scripts_with_a_newer_head(tmp_path: Path) -> SchemaInfo:
    """A copy of the shipped migrations plus one more revision: the real head becomes an older one."""
    from alembic.script import ScriptDirectory

    copy = tmp_path / "migrations"
    shutil.copytree(find_scripts(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    head = schema_info().head
    (copy / "versions" / "9000_next.py").write_text(
        f'revision = "9000_next"\ndown_revision = "{head}"\nbranch_labels = None\ndepends_on = None\n\n'
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n",
        encoding="utf-8",
    )
    return schema_info(ScriptDirectory(str(copy)))


def test_old_schema_will_be_migrated(tmp_path: Path) -> None:
    path = tmp_path / "manifest.sqlite3"
    Store.open(path).close()  # at today's head
    current = check_manifest(path, schema_info())
    assert current.level == "ok"
    newer_code = _scripts_with_a_newer_head(tmp_path)
    finding = check_manifest(path, newer_code)
    assert finding.level == "warn" and "will be migrated to '9000_next' on the next run" in finding.message


def test_schema_judgements() -> None:
    schema = SchemaInfo("0002", lambda rev: rev in ("0001", "0002"))
    where = Path("m.sqlite3")
    assert judge_schema(["0002"], True, schema, where).level == "ok"
    assert judge_schema(["0001"], True, schema, where).level == "warn"
    assert judge_schema(["0003"], True, schema, where).exit_code == 8
    assert judge_schema([], True, schema, where).level == "fail"  # tables but no version: not ours
    assert judge_schema([], False, schema, where).level == "ok"  # empty file: created on the next run
    assert "damaged" in judge_schema(["0001", "0002"], True, schema, where).message


def test_not_a_manifest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.sqlite3"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE photos (id INTEGER)")
    con.close()
    assert "not an imgsync manifest" in check_manifest(path, schema_info()).message


def test_token_scope() -> None:
    assert check_token_scope(("public", "brain_all_scope"), ["same_hq"]).level == "ok"
    bce = check_token_scope(("public", "wise_adapt"), ["same_hq"])
    assert bce.level == "fail" and bce.exit_code == 4 and "API Key" in bce.fix
    partial = check_token_scope(("brain_all_scope", "brain_realtime_same_hq"), ["same_hq", "product"])
    assert partial.level == "warn" and "product" in partial.message and "same_hq" not in partial.message


def test_probe_sees_the_local_gallery_scope_and_date(partial_gallery) -> None:
    clock = FakeClock()  # 2027: far from the gallery's real Date header
    probe = HttpGalleryProbe(partial_gallery.url, KEY, SECRET)
    try:
        probe.search("same_hq", make_image(3))
    finally:
        probe.close()
    assert "brain_all_scope" in (probe.observed.scope or ())
    assert probe.observed.server_time is not None
    skewed = check_clock(probe.observed.server_time, clock.time())
    assert skewed.level == "warn" and "ahead of" in skewed.message and "ntp" in skewed.fix
    assert check_clock(probe.observed.server_time, probe.observed.server_time + 2).level == "ok"


def test_inotify_limit_against_directories(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "http://127.0.0.1:9")
    config = load_config(setup.config, state_dir=setup.state)
    assert count_directories(setup.folder) == 4
    assert check_inotify(config, 100).level == "ok"
    assert check_inotify(config, 7).level == "warn"  # more than half the user's limit
    over = check_inotify(config, 3)
    assert over.level == "warn" and "above fs.inotify.max_user_watches = 3" in over.message
    assert "sysctl fs.inotify.max_user_watches=16" in over.fix
    assert check_inotify(config, None).level == "ok"  # not Linux


def test_disabled_library_answers_like_the_cloud(partial_gallery) -> None:
    """The wire answer the doctor recognises: HTTP 200, error_code 216017 "not initialized"."""
    token = requests.post(
        partial_gallery.url + "/oauth/2.0/token",
        data={"grant_type": "client_credentials", "client_id": KEY, "client_secret": SECRET},
        timeout=10,
    ).json()
    path = LIBRARIES["product"].path("search")
    answer = requests.post(
        partial_gallery.url + path, params={"access_token": token["access_token"]}, data={"image": "x"}, timeout=10
    )
    assert answer.status_code == 200
    body = answer.json()
    assert (body["error_code"], body["error_msg"]) == (216017, "not initialized") and "log_id" in body
    # A bad token is still answered first, as for every call.
    assert requests.post(partial_gallery.url + path, data={}, timeout=10).json()["error_code"] == 110


def test_serve_libraries_option_is_checked(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["gallery", "serve", "--data", str(tmp_path), "--libraries", "same_hq,nope"])
    assert result.exit_code == 2 and "unknown: nope" in result.output
    with pytest.raises(ValueError, match="unknown library 'nope'"):
        start_in_thread(tmp_path / "g", libraries=("nope",))


def test_binding_judged_from_the_manifest_and_the_config() -> None:
    from imgsync.doctor import judge_binding

    assert judge_binding(None, 5, "local#a") is None  # a manifest from before the binding
    assert judge_binding("local#a", 0, "local#b") is None  # nothing recorded: nothing would be skipped
    assert judge_binding("local#a", 5, "local#a") is None
    moved = judge_binding("local#a", 5, "https://aip.baidubce.com#b")
    assert moved is not None and moved.level == "fail" and "--rebind" in moved.fix and moved.exit_code == 2


def test_doctor_sees_a_manifest_bound_to_another_gallery(tmp_path: Path) -> None:
    import os
    import shutil

    from click.testing import CliRunner

    from conftest import make_image
    from imgsync.cli import cli

    folder = tmp_path / "pics"
    folder.mkdir()
    p = folder / "a.jpg"
    p.write_bytes(make_image(1))
    t = p.stat().st_mtime_ns - 10**10
    os.utime(p, ns=(t, t))
    (tmp_path / "c.toml").write_text("")
    env = {"IMGSYNC_STATE_DIR": str(tmp_path / "state"), "IMGSYNC_CONFIG": str(tmp_path / "c.toml")}
    assert CliRunner().invoke(cli, ["reconcile", str(folder)], env=env).exit_code == 0
    assert CliRunner().invoke(cli, ["doctor"], env=env).exit_code == 0
    shutil.rmtree(tmp_path / "state" / "gallery")
    result = CliRunner().invoke(cli, ["doctor"], env=env)
    assert result.exit_code == 2 and "gallery binding" in result.output and "--rebind" in result.output


def test_the_embedded_gallery_held_by_another_imgsync_is_probed_where_it_is_served(tmp_path: Path) -> None:
    """As while `imgsync watch` runs: the data dir is locked, so doctor asks the process that holds it."""
    state = tmp_path / "state"
    holder = start_in_thread(state / "gallery")  # holds the data dir's lock and announces its URL
    try:
        result = CliRunner().invoke(cli, ["--state-dir", str(state), "doctor"], catch_exceptions=False)
    finally:
        holder.stop()
    assert "Traceback" not in result.output
    assert "served by another imgsync" in result.output and "ok   library same_hq: enabled" in result.output


def test_no_mirror_is_not_ready_to_sync(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--state-dir", str(tmp_path / "state"), "doctor"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "WARN config" in result.output and "no mirror yet" in result.output
    assert result.output.rstrip().endswith("no mirror to sync yet")


def test_a_gallery_left_at_the_former_default_place_is_pointed_at(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "local")
    former = tmp_path / "share" / "imgsync" / "gallery"
    assert not any(f.check == "gallery data" for f in setup.report(former_gallery=lambda: former).findings)
    former.mkdir(parents=True)  # there, but empty: nothing to say
    assert not any(f.check == "gallery data" for f in setup.report(former_gallery=lambda: former).findings)
    (former / "gallery.sqlite3").write_bytes(b"")
    (found,) = [f for f in setup.report(former_gallery=lambda: former).findings if f.check == "gallery data"]
    assert found.level == "warn" and str(former) in found.message and str(setup.state / "gallery") in found.message
    assert f"imgsync gallery serve --data {former}" in found.fix
    # the state dir's own gallery is the default: nothing to point at
    (setup.state / "gallery").mkdir(parents=True, exist_ok=True)
    (setup.state / "gallery" / "notes.txt").write_text("not empty")
    same = setup.report(former_gallery=lambda: setup.state / "gallery").findings
    assert not any(f.check == "gallery data" for f in same)


def test_a_full_state_dir_disk_blocks_with_exit_8_and_no_talk_of_damage(tmp_path: Path) -> None:
    """A sync on a full disk ends with exit 8 at once: doctor must say so ("ready to sync" was what it
    said), and must not send a user with a merely full disk to restore the manifest from a backup."""
    from imgsync.doctor import MIN_FREE_BYTES, check_state_dir

    state = tmp_path / "state"
    full = check_state_dir(state, free=lambda p: 4096)
    assert full.level == "fail" and full.exit_code == 8, full
    assert "0.0 MB free" in full.message and str(state) in full.message and "backup" not in full.fix
    roomy = check_state_dir(state, free=lambda p: MIN_FREE_BYTES)
    assert roomy.level == "ok", roomy
    state.mkdir()
    assert check_state_dir(state, free=lambda p: 10).exit_code == 8  # existing or not, the same answer
