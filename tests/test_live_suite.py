"""The live suite's gate: live tests are skipped (with a reason saying what to do) unless pytest is run with
`-m live` AND the credentials are set; and when they do run, they clean up everything they add.

The last test runs the live suite for real, in a pytest subprocess, with IMGSYNC_LIVE_ENDPOINT pointed at
a local gallery (standing in for the cloud), and checks that the gallery is empty afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LIVE_NO_CREDENTIALS, LIVE_NOT_SELECTED, live_selected
from imgsync.libraries import LIBRARIES

REPO = Path(__file__).resolve().parent.parent
LIVE_FILES = ["tests/test_live_reconcile.py", "tests/test_gallery_client.py", "tests/test_localgallery_sdk.py"]


def run_pytest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSYNC_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=280,
    )


def test_marker_expression_must_ask_for_live() -> None:
    assert live_selected("live")
    assert live_selected("live and not slow")
    assert live_selected("live or slow")
    assert not live_selected("")
    assert not live_selected("not slow")  # selects live tests too, but does not ask for them
    assert not live_selected("not live")
    assert not live_selected("slow")


def test_credentials_alone_do_not_run_live_tests() -> None:
    result = run_pytest(
        "tests/test_live_reconcile.py",
        env={
            "IMGSYNC_LIVE_API_KEY": "ak",
            "IMGSYNC_LIVE_SECRET_KEY": "sk",
            "IMGSYNC_LIVE_ENDPOINT": "http://127.0.0.1:9",
        },
    )  # nothing listens: a run would fail, not skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert LIVE_NOT_SELECTED.split(";")[0] in result.stdout


def test_live_without_credentials_is_skipped_with_the_reason() -> None:
    result = run_pytest("-m", "live", "tests/test_live_reconcile.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped, 1 deselected" in result.stdout
    assert LIVE_NO_CREDENTIALS.split("(")[0].strip() in result.stdout


@pytest.mark.slow
def test_live_suite_runs_against_a_stand_in_and_leaves_nothing_behind(tmp_path: Path) -> None:
    from imgsync.localgallery.engine import Engine
    from imgsync.localgallery.server import start_in_thread

    stand_in = start_in_thread(
        tmp_path / "cloud", keys=[("live-ak", "live-sk")], libraries=("same_hq", "similar", "product")
    )
    try:
        result = run_pytest(
            "-m",
            "live",
            *LIVE_FILES,
            env={
                "IMGSYNC_LIVE_API_KEY": "live-ak",
                "IMGSYNC_LIVE_SECRET_KEY": "live-sk",
                "IMGSYNC_LIVE_ENDPOINT": stand_in.url,
                "IMGSYNC_LIVE_LIBRARIES": "same_hq,similar,product",
                "IMGSYNC_LIVE_QPS": "100",
            },
        )
        engine = Engine(stand_in.data_dir, read_only=True)
        try:
            left = {lib: engine.entries(lib) for lib in LIBRARIES}
        finally:
            engine.close()
    finally:
        stand_in.stop()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
    # picturebook and materiel are not enabled on this "account": their tests skip, saying why.
    assert "the picturebook library is not enabled" in result.stdout
    assert left == {lib: [] for lib in LIBRARIES}
