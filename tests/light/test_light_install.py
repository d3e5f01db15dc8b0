"""The light install (`pip install imgsync`, no gallery extra): the sync engine and the cloud client alone.

CI runs this file in a venv holding only `pip install '.[test-light]'` (see .ci/run), where numpy, OpenCV,
onnxruntime and faiss are simply absent; the full suite runs it too. Each command runs as the user
runs it, a process of this venv's Python, and reports which top-level modules it imported: none of the
gallery's packages may be among them, in either venv.

The gallery these processes sync to is a SECOND process: `imgsync gallery serve` from an install that has the
extra, named by $IMGSYNC_TEST_GALLERY_IMGSYNC (.ci/run sets it to the full venv's imgsync). Without it, this
venv's own imgsync serves when it has the extra; otherwise those tests are skipped, saying so.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from conftest import PROCESS_DEADLINE, gallery_process
from imgsync.gallery.extra import GALLERY_MODULES, missing_gallery_modules

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVER_ENV = "IMGSYNC_TEST_GALLERY_IMGSYNC"
#: Read at import: the autouse _clean_environ fixture removes every IMGSYNC_* variable before each test.
SERVER_IMGSYNC = os.environ.get(SERVER_ENV, "").strip()
INSTALL_HINT = "pip install 'imgsync[gallery]'"

# Runs imgsync's console entry point. IMGSYNC_TEST_HIDE: modules made unimportable first (so the full venv can
# play a light one: import fails and find_spec answers None, as when they are not installed).
# IMGSYNC_TEST_IMPORTED: a file that receives the top-level modules loaded when the process ends.
_RUNNER = r"""
import atexit, json, os, sys
for name in filter(None, os.environ.pop("IMGSYNC_TEST_HIDE", "").split(",")):
    sys.modules[name] = None
report = os.environ.pop("IMGSYNC_TEST_IMPORTED", "")
if report:
    def _write():
        loaded = {name.split(".")[0] for name, module in list(sys.modules.items()) if module is not None}
        with open(report, "w") as f:
            json.dump(sorted(loaded), f)
    atexit.register(_write)
sys.argv[0] = "imgsync"
from imgsync.cli import main
main()
"""


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    #: Top-level modules the process had imported when it ended.
    imported: set[str]

    @property
    def heavy(self) -> set[str]:
        return self.imported & set(GALLERY_MODULES)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSYNC_")}
    return {**env, **extra}


def imgsync(tmp_path: Path, *args: str, env: dict[str, str] | None = None, hide: tuple[str, ...] = ()) -> Ran:
    """One `imgsync ARGS` process of this venv's Python."""
    out = tmp_path / f"imported-{os.urandom(4).hex()}.json"
    env = {
        **(env if env is not None else base_env()),
        "IMGSYNC_TEST_IMPORTED": str(out),
        "IMGSYNC_TEST_HIDE": ",".join(hide),
    }
    done = subprocess.run(
        [sys.executable, "-I", "-c", _RUNNER, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_DEADLINE,
        cwd=tmp_path,
    )
    imported = set(json.loads(out.read_text())) if out.exists() else set()
    return Ran(done.returncode, done.stdout, done.stderr, imported)


def gallery_command() -> list[str]:
    """How to start `imgsync` with the gallery extra, in its own process."""
    if SERVER_IMGSYNC:
        if not (os.path.isfile(SERVER_IMGSYNC) and os.access(SERVER_IMGSYNC, os.X_OK)):
            pytest.fail(f"{SERVER_ENV}={SERVER_IMGSYNC!r} is not an executable imgsync")
        return [SERVER_IMGSYNC]
    if not missing_gallery_modules():
        return [sys.executable, "-I", "-m", "imgsync"]  # -I: the installed imgsync, not a checkout in the cwd
    pytest.skip(
        f"no local gallery to sync to: this venv is a light install; set {SERVER_ENV} to the imgsync of "
        "an install with the gallery extra (a full venv's bin/imgsync), as .ci/run does"
    )


@dataclass
class Served:
    url: str
    api_key: str
    secret_key: str
    data_dir: Path
    command: list[str]


@pytest.fixture
def served_gallery(tmp_path: Path) -> Iterator[Served]:
    """`imgsync gallery serve` in another process (another venv in CI), on an ephemeral loopback port."""
    command = gallery_command()
    data = tmp_path / "served-gallery"
    with gallery_process(
        command,
        ["gallery", "serve", "--port", "0", "--data", str(data), "--key", "light-ak:light-sk"],
        tmp_path / "served-gallery.log",
        base_env(),
    ) as (url, _):
        yield Served(url, "light-ak", "light-sk", data, command)


def settled_copy(src: Path, dst: Path) -> Path:
    """A copy of the example pictures, old enough that a one-shot run syncs them at once."""
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        os.utime(f, (1_600_000_000, 1_600_000_000))
    return dst


def cloud_config(tmp_path: Path, served: Served, folder: Path, *, fit: str = "reject") -> dict[str, str]:
    """A config naming the served gallery's URL (as a cloud user names the cloud's); keys in the environment."""
    config = tmp_path / "imgsync.toml"
    config.write_text(
        f'[gallery]\nendpoint = "{served.url}"\n\n'
        f'[[mirror]]\nname = "pics"\nfolder = "{folder}"\nlibrary = "same_hq"\nfit = "{fit}"\n'
    )
    return base_env(
        IMGSYNC_CONFIG=str(config),
        IMGSYNC_STATE_DIR=str(tmp_path / "state"),
        IMGSYNC_API_KEY=served.api_key,
        IMGSYNC_SECRET_KEY=served.secret_key,
    )


def test_reconcile_status_search_and_doctor_sync_to_a_served_gallery_without_its_packages(
    tmp_path: Path, served_gallery: Served
) -> None:
    folder = settled_copy(EXAMPLES / "catalogue", tmp_path / "catalogue")
    env = cloud_config(tmp_path, served_gallery, folder)

    first = imgsync(tmp_path, "reconcile", "--json", env=env)
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout)[0]["counts"]["added"] == 6
    again = imgsync(tmp_path, "reconcile", "--json", env=env)
    assert again.code == 0 and json.loads(again.stdout)[0]["counts"]["added"] == 0, again.stderr
    status = imgsync(tmp_path, "status", "--json", env=env)
    assert status.code == 0, status.stderr
    (mirror,) = json.loads(status.stdout)["mirrors"]
    assert mirror["counts"]["synced"] == 6
    found = imgsync(tmp_path, "search", str(EXAMPLES / "query.jpg"), "--json", env=env)
    assert found.code == 0, found.stderr
    hits = json.loads(found.stdout)
    assert "boat.jpg" in hits[0]["brief"] and hits[0]["score"] > 0.9
    doctor = imgsync(tmp_path, "doctor", env=env)
    assert doctor.code == 0, doctor.stdout + doctor.stderr
    assert "ready to sync" in doctor.stdout

    for ran in (first, again, status, found, doctor):
        assert "imgsync" in ran.imported  # the report is real: it lists what the process loaded
        assert ran.heavy == set(), f"the engine imported the gallery's {sorted(ran.heavy)}"


def _tiff_16bit(photo: Path) -> bytes:
    """A 16-bit greyscale TIFF of a real photo: the case shrink.py once needed numpy for."""
    wide = Image.open(photo).convert("L").convert("I").point(lambda v: v * 257).convert("I;16")
    buf = io.BytesIO()
    wide.save(buf, format="TIFF")
    return buf.getvalue()


def test_shrinking_webp_and_16_bit_tiff_needs_none_of_the_gallerys_packages(
    tmp_path: Path, served_gallery: Served
) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.open(EXAMPLES / "catalogue" / "boat.jpg").save(folder / "boat.webp", format="WEBP", quality=90)
    (folder / "house.tif").write_bytes(_tiff_16bit(EXAMPLES / "catalogue" / "house.jpg"))
    for f in folder.iterdir():
        os.utime(f, (1_600_000_000, 1_600_000_000))
    env = cloud_config(tmp_path, served_gallery, folder, fit="shrink")

    run = imgsync(tmp_path, "reconcile", "--json", env=env)
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)[0]["counts"]["added"] == 2
    assert run.heavy == set(), f"the engine imported the gallery's {sorted(run.heavy)}"
    # What arrived is the shrunk pictures: the served gallery lists both, and finds the boat.
    listed = subprocess.run(
        [
            *served_gallery.command,
            "gallery",
            "ls",
            "--data",
            str(served_gallery.data_dir),
            "--library",
            "same_hq",
            "--json",
        ],
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_DEADLINE,
    )
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(e["brief"])["path"] for e in json.loads(listed.stdout)) == ["boat.webp", "house.tif"]
    found = imgsync(tmp_path, "search", str(EXAMPLES / "query.jpg"), "--json", env=env)
    assert found.code == 0 and "boat.webp" in json.loads(found.stdout)[0]["brief"], found.stderr


# --------------------------------------------------------------------------- without the extra: one line, exit 2

#: In the full venv the gallery's packages are hidden from the process, as if not installed.
HIDE = GALLERY_MODULES if not missing_gallery_modules() else ()


def _zero_config(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return base_env(IMGSYNC_CONFIG=str(empty), IMGSYNC_STATE_DIR=str(tmp_path / "state"))


def _local_config(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "local.toml"
    config.write_text(f'[gallery]\nendpoint = "local"\n\n[[mirror]]\nname = "pics"\nfolder = "{tmp_path / "pics"}"\n')
    return base_env(IMGSYNC_CONFIG=str(config), IMGSYNC_STATE_DIR=str(tmp_path / "state"))


@pytest.mark.parametrize(
    ("config", "args"),
    [
        pytest.param(_zero_config, ("reconcile", "{pics}"), id="zero-config reconcile"),
        pytest.param(_local_config, ("reconcile",), id="endpoint local reconcile"),
        pytest.param(_zero_config, ("search", "{query}"), id="search"),
        pytest.param(_zero_config, ("watch", "{pics}"), id="watch"),
    ],
)
def test_the_embedded_gallery_without_the_extra_is_one_line_exit_2(tmp_path: Path, config, args) -> None:
    settled_copy(EXAMPLES / "catalogue", tmp_path / "pics")
    argv = [a.format(pics=tmp_path / "pics", query=EXAMPLES / "query.jpg") for a in args]
    ran = imgsync(tmp_path, *argv, env=config(tmp_path), hide=HIDE)
    assert ran.code == 2, ran.stdout + ran.stderr
    (line,) = ran.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("Error: ") and 'gallery.endpoint = "local"' in line
    assert INSTALL_HINT in line and "[gallery] endpoint" in line  # what to install, or where to point instead
    assert not (tmp_path / "state").exists()  # refused before anything was written
    assert ran.heavy == set()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("gallery", "serve", "--port", "0"), id="gallery serve"),
        pytest.param(("gallery", "ls", "--library", "same_hq"), id="gallery ls"),
    ],
)
def test_gallery_commands_without_the_extra_are_one_line_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    ran = imgsync(tmp_path, *args, env=_zero_config(tmp_path), hide=HIDE)
    assert ran.code == 2, ran.stdout + ran.stderr
    (line,) = ran.stderr.strip().splitlines()
    assert line.startswith(f"Error: `imgsync {args[0]} {args[1]}` needs the local gallery") and INSTALL_HINT in line
    assert not (tmp_path / "state").exists()  # nothing was created


def test_doctor_without_the_extra_fails_the_gallery_check_with_exit_2(tmp_path: Path) -> None:
    ran = imgsync(tmp_path, "doctor", env=_zero_config(tmp_path), hide=HIDE)
    assert ran.code == 2, ran.stdout + ran.stderr
    (line,) = [x for x in ran.stdout.splitlines() if x.startswith("FAIL")]
    assert line.startswith("FAIL gallery: ") and INSTALL_HINT in line and "[gallery] endpoint" in line
    assert "Traceback" not in ran.stderr
