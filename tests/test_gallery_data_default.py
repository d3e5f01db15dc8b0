"""One default for the embedded gallery's data: `imgsync gallery ls` and `gallery serve` use <state dir>/gallery,
the dir `imgsync reconcile` fills with endpoint = "local", found the way every command finds the state dir
(--state-dir, $IMGSYNC_STATE_DIR, the config's state_dir)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import gallery_process
from imgsync.cli import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BRIEFS = ["boat.jpg", "fabric.jpg", "house.jpg", "mountains.jpg", "page.jpg", "shapes.jpg"]


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's quick start, zero config: the examples reconciled into the embedded gallery. The state dir."""
    root = tmp_path_factory.mktemp("quick")
    folder = root / "catalogue"
    shutil.copytree(EXAMPLES / "catalogue", folder)
    for f in folder.iterdir():
        os.utime(f, (1_600_000_000, 1_600_000_000))
    (root / "empty.toml").write_text("")
    ran = CliRunner().invoke(
        cli,
        ["--state-dir", str(root / "state"), "reconcile", str(folder)],
        env={"IMGSYNC_CONFIG": str(root / "empty.toml")},
    )
    assert ran.exit_code == 0, ran.output
    return root / "state"


def listed(output: str) -> list[str]:
    return sorted(json.loads(e["brief"])["path"] for e in json.loads(output))


def test_gallery_ls_lists_the_embedded_gallery_wherever_the_state_dir_is_set(quick_start: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    config = tmp_path / "state.toml"
    config.write_text(f'state_dir = "{quick_start}"\n')
    ls = ["gallery", "ls", "--library", "same_hq", "--json"]
    for args, env in (
        (["--state-dir", str(quick_start), *ls], {"IMGSYNC_CONFIG": str(empty)}),
        (ls, {"IMGSYNC_CONFIG": str(empty), "IMGSYNC_STATE_DIR": str(quick_start)}),
        (["--config", str(config), *ls], {}),
    ):
        ran = CliRunner().invoke(cli, args, env=env)
        assert ran.exit_code == 0, (args, ran.output)
        assert listed(ran.stdout) == BRIEFS


def test_gallery_ls_names_the_dir_it_looked_in(tmp_path: Path) -> None:
    (tmp_path / "empty.toml").write_text("")
    ran = CliRunner().invoke(
        cli,
        ["--state-dir", str(tmp_path / "nothing"), "gallery", "ls", "--library", "same_hq"],
        env={"IMGSYNC_CONFIG": str(tmp_path / "empty.toml")},
    )
    assert ran.exit_code == 2 and str(tmp_path / "nothing" / "gallery") in ran.output


def test_gallery_serve_serves_the_embedded_gallery_and_local_commands_use_it(quick_start: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.toml").write_text("")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IMGSYNC_")},
        "IMGSYNC_CONFIG": str(tmp_path / "empty.toml"),
    }
    serve = ["--state-dir", str(quick_start), "gallery", "serve", "--port", "0"]
    with gallery_process([sys.executable, "-I", "-m", "imgsync"], serve, tmp_path / "serve.log", env) as (_, data_dir):
        assert data_dir == quick_start / "gallery"
        # While it holds the gallery, a zero-config search (endpoint = "local") is answered by it.
        found = CliRunner().invoke(
            cli,
            ["--state-dir", str(quick_start), "search", str(EXAMPLES / "query.jpg"), "--json"],
            env={"IMGSYNC_CONFIG": str(tmp_path / "empty.toml")},
        )
        assert found.exit_code == 0, found.output
        assert "boat.jpg" in json.loads(found.stdout)[0]["brief"]
