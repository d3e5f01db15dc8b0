"""Bring a manifest's schema to this imgsync's head revision with Alembic, configured in code.

The migration scripts ship inside the wheel as imgsync/migrations (pyproject force-includes the
top-level migrations/ there); an editable install finds them at the source tree's top level. There is no
alembic.ini: the Config is built here, and env.py uses the connection we hand it.

A manifest stamped with a revision this code does not know was written by a newer imgsync: it is refused
(ManifestError), never "upgraded" or touched, so the newer imgsync's records stay intact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect

import imgsync
from imgsync.errors import ManifestError
from imgsync.manifest.engine import writer

log = logging.getLogger("imgsync.manifest")

VERSION_TABLE = "alembic_version"


def find_scripts() -> Path:
    """The directory holding env.py and versions/: inside the package (wheel), else the source tree."""
    package = Path(imgsync.__file__).resolve().parent
    candidates = (package / "migrations", package.parent / "migrations")
    for candidate in candidates:
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    raise ManifestError(f"imgsync's schema migrations are missing (looked in {looked}); reinstall imgsync")


def alembic_config() -> Config:
    cfg = Config()
    # ConfigParser interpolates '%': escape it so any install path works.
    cfg.set_main_option("script_location", str(find_scripts()).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return head


def upgrade(engine: Engine, where: Path) -> None:
    """Upgrade the manifest to head (a no-op when it is there); refuse one from a newer imgsync."""
    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    # A plain read first: the usual case (already at head) takes no write lock, so `imgsync status`
    # works while a reconcile runs, and on a read-only manifest.
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_heads()
    _check_known(script, current, head, where)
    if current == (head,):
        return
    with _schema_change(engine) as conn:
        current = MigrationContext.configure(conn).get_current_heads()  # again, now under the write lock
        _check_known(script, current, head, where)
        if not current and set(inspect(conn).get_table_names()) - {VERSION_TABLE}:
            raise ManifestError(
                f"{where} is an SQLite database but not an imgsync manifest (it has tables and no schema "
                "version); move it away or point --state-dir elsewhere"
            )
        if current == (head,):
            return
        log.info("upgrading manifest %s from %s to %s", where, current[0] if current else "empty", head)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def downgrade(engine: Engine, revision: str, where: Path) -> None:
    """Downgrade to `revision` ("base" drops everything). For tests and support, not used by imgsync."""
    cfg = alembic_config()
    with _schema_change(engine) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _check_known(script: ScriptDirectory, current: tuple[str, ...], head: str | None, where: Path) -> None:
    for rev in current:
        try:
            known = script.get_revision(rev) is not None
        except CommandError:
            known = False
        if not known:
            raise ManifestError(
                f"{where} has schema revision {rev!r}, which this imgsync does not know (its newest is {head!r}): "
                "it was written by a newer imgsync. Upgrade imgsync; the manifest was left untouched"
            )
    if len(current) > 1:
        raise ManifestError(f"{where} has several schema revisions at once ({', '.join(current)}); it is damaged")


@contextmanager
def _schema_change(engine: Engine) -> Iterator[Connection]:
    """One write transaction with foreign keys off, checked before commit (SQLite's recipe for schema
    changes: batch migrations rebuild tables, which would otherwise cascade or fail on references)."""
    with writer(engine).connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None  # a pooled connection, checked out: its DBAPI connection is there
        raw.execute("PRAGMA foreign_keys = OFF")  # only takes effect outside a transaction
        try:
            with conn.begin():
                yield conn
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise ManifestError(f"schema upgrade would break {len(broken)} references; nothing was changed")
        finally:
            raw.execute("PRAGMA foreign_keys = ON")
