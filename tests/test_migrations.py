"""The manifest schema is owned by the Alembic migrations: they build exactly tables.Base.metadata, go down
and up again, refuse a manifest from a newer imgsync, and ship inside the wheel."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, create_engine

from imgsync.errors import ManifestError
from imgsync.manifest import Store, migrate
from imgsync.manifest.engine import create_manifest_engine
from imgsync.manifest.tables import Base

TABLES = {"entries", "files", "journal", "runs", "mirror_state"}


def schema_diff(path: Path, metadata: MetaData) -> list:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def table_names(path: Path) -> set[str]:
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()


def test_upgrade_head_builds_exactly_the_models(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    Store.open(path).close()
    assert TABLES <= table_names(path)
    assert schema_diff(path, Base.metadata) == []


def test_the_comparison_would_see_a_drift(tmp_path: Path) -> None:
    """Guards the test above: compare_metadata does report a column the migrations lack."""
    path = tmp_path / "m.sqlite3"
    Store.open(path).close()
    drifted = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    Table("files", drifted, Column("extra", Integer), extend_existing=True)
    diff = schema_diff(path, drifted)
    assert [(d[0], d[3].name) for d in diff] == [("add_column", "extra")]


def test_partial_unique_indexes_exist_in_the_migrated_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    Store.open(path).close()
    con = sqlite3.connect(path)
    sql = dict(con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
    con.close()
    assert "WHERE cont_sign IS NOT NULL" in sql["uq_entries_library_cont_sign"]
    assert "WHERE state != 'deleting'" in sql["uq_entries_mirror_content_hash"]


def test_downgrade_base_then_upgrade_again(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    Store.open(path).close()
    engine = create_manifest_engine(path)
    try:
        migrate.downgrade(engine, "base", path)
        assert migrate.current_revision(engine) is None
    finally:
        engine.dispose()
    assert table_names(path) & TABLES == set()
    with Store.open(path) as s:
        assert s.schema_revision() == migrate.head_revision()
        s.save_scan("m", [])
    assert schema_diff(path, Base.metadata) == []


def test_a_manifest_from_a_newer_imgsync_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    with Store.open(path) as s:
        s.start_run("photos")
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = '0042_from_the_future'")
    con.commit()
    con.close()
    with pytest.raises(ManifestError) as info:
        Store.open(path)
    message = str(info.value)
    assert "'0042_from_the_future'" in message and "newer imgsync" in message and str(path) in message
    con = sqlite3.connect(path)
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("0042_from_the_future",)]
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    con.close()


def test_one_linear_history_with_a_single_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_heads() == [migrate.head_revision()]
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    assert (migrate.find_scripts() / "env.py").is_file()


def test_processes_opening_a_new_manifest_at_once_all_succeed(tmp_path: Path) -> None:
    """The upgrade runs under SQLite's write lock: the first creates the schema, the others wait and see it."""
    path = tmp_path / "m.sqlite3"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        try:
            start.wait()
            Store.open(path).close()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert schema_diff(path, Base.metadata) == []


# ---------------------------------------------------------------------- the wheel


_OPEN_FROM_WHEEL = """
import sys
from pathlib import Path
import imgsync
from imgsync.manifest import Store, migrate
with Store.open(Path(sys.argv[1]) / "state" / "m.sqlite3") as s:
    s.save_scan("photos", [])
    print(s.schema_revision())
print(imgsync.__file__)
print(migrate.find_scripts())
"""


@pytest.mark.slow
def test_the_wheel_ships_the_migrations_and_upgrades_from_them(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    if not (repo / "pyproject.toml").is_file() or not (repo / "migrations").is_dir():
        pytest.skip("needs the source tree (pyproject.toml and migrations/)")
    wheel_dir = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(repo)]
    if importlib.util.find_spec("hatchling") is not None:
        build.insert(4, "--no-build-isolation")  # offline-friendly when the backend is already here
    done = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    [wheel] = wheel_dir.glob("imgsync-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "imgsync/migrations/env.py",
        "imgsync/migrations/script.py.mako",
        "imgsync/migrations/versions/0001_initial.py",
        "imgsync/manifest/store.py",
        # the local gallery's PostgreSQL schema, inside its package
        "imgsync/localgallery/pg_migrations/env.py",
        "imgsync/localgallery/pg_migrations/versions/0001_initial.py",
    } <= names
    assert not any(n.endswith("alembic.ini") for n in names)

    # A fresh venv holding only the wheel's imgsync; its dependencies come from this interpreter's
    # site-packages through a .pth path entry (a plain path: .pth files *there*, such as an editable
    # install's, are not processed, so the source tree stays out of sight).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    parents = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_parent_env.pth").write_text("".join(f"{p}\n" for p in parents))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--force-reinstall",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    run = subprocess.run(
        [str(python), "-I", "-c", _OPEN_FROM_WHEEL, str(outside)],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    revision, module, scripts = run.stdout.split("\n")[:3]
    assert revision == migrate.head_revision()
    assert Path(module).is_relative_to(venv) and Path(scripts) == Path(module).parent / "migrations"
    assert (outside / "state" / "m.sqlite3").is_file()


def test_the_light_readers_know_the_head_revision() -> None:
    """manifest/lite.py checks the schema without importing Alembic: its SCHEMA_HEAD must be the head."""
    from imgsync.manifest.migrate import head_revision
    from imgsync.manifest.records import SCHEMA_HEAD

    assert SCHEMA_HEAD == head_revision()
