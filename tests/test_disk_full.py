"""A full state dir (a real, small tmpfs; needs root to mount): one line naming the file system, exit 8,
nothing lost; once space is freed the next run resumes and the library ends equal to the folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture
def small_state(tmp_path) -> Iterator[Path]:
    where = tmp_path / "state"
    where.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(where)], capture_output=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, timeout=30)


def _imgsync(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSYNC_")}
    env["IMGSYNC_STATE_DIR"] = str(state)
    env["IMGSYNC_CONFIG"] = str(state.parent / "no-config.toml")
    return subprocess.run(
        [sys.executable, "-m", "imgsync", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_a_full_state_dir_is_one_line_exit_8_and_the_next_run_resumes(tmp_path, small_state):
    from imgsync.localgallery.engine import Engine
    from imgsync.manifest import Store

    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(20):  # noisy pictures: ~9 MB of uploads to spool, store and index, far more than 3 MB
        Image.effect_noise((800, 600), 40 + 3 * i).convert("RGB").save(folder / f"{i}.jpg", quality=95)
        os.utime(folder / f"{i}.jpg", (1_600_000_000, 1_600_000_000))
    (tmp_path / "no-config.toml").write_text("")

    full = _imgsync(small_state, "reconcile", str(folder))
    assert full.returncode == 8, full.stdout + full.stderr
    assert "Traceback" not in full.stderr
    # The one other line says the folder is remembered (a first run of a folder without a config).
    errors = [line for line in full.stderr.splitlines() if line.strip() and "remembered as mirror" not in line]
    assert len(errors) == 1 and errors[0].startswith("Error: no space left on the file system of"), full.stderr

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_state)], check=True, timeout=30)
    resumed = _imgsync(small_state, "reconcile", str(folder), "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with Store.open(small_state / "manifest.sqlite3") as store:
        (mirror,) = store.mirror_names()
        assert store.counts(mirror)["synced"] == 20 and store.open_journal() == []
        signs = {e.cont_sign for e in store.entries(mirror).values()}
    eng = Engine(small_state / "gallery", read_only=True)
    try:
        remote = {e["cont_sign"] for e in eng.entries("same_hq")}
    finally:
        eng.close()
    assert remote == signs and len(signs) == 20  # no orphan, no duplicate, nothing lost
    assert list((small_state / "spool").iterdir()) == []
