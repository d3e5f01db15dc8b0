"""The SQLite engine behind the manifest: its pragmas and how its transactions begin.

Durability, decided: WAL with synchronous=FULL. WAL alone (synchronous=NORMAL) already keeps every
committed transaction through a crash of the *process* (kill -9, OOM): a commit has written the WAL
into the OS before it returns. NORMAL can lose the last commits on an OS crash or power cut, and for
imgsync that is worse than a lost record: a journal intent committed just before its remote call could
vanish while the call went through, leaving an entry in the gallery that no record knows about (the cloud
has no list call to find it again). FULL fsyncs the WAL at each commit: measured on the dev VM (ext4),
an add's two transactions take 1.5 ms instead of 1.0 ms. A remote call costs far more, and bulk writes
(save_scan) are one transaction, so we pay it.

Transactions: pysqlite's own implicit BEGIN is switched off and we emit BEGIN ourselves (the SQLAlchemy
recipe for SQLite), so a transaction starts where SQLAlchemy says it does. Writes use BEGIN IMMEDIATE:
they take the write lock up front and wait (busy_timeout) for another writer instead of failing later
with "database is locked" when a read transaction tries to upgrade. Reads use a plain (deferred) BEGIN and,
with WAL, never block on or block the writer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event

from imgsync.manifest.lite import BUSY_TIMEOUT_MS, configure

#: Execution option that makes a connection's transactions BEGIN IMMEDIATE.
WRITE = "imgsync_write"


def create_manifest_engine(path: Path) -> Engine:
    """An engine for the manifest at `path` (the file is created on first connect)."""
    engine = create_engine(
        URL.create("sqlite+pysqlite", database=str(path)),
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
    )
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine (same pool), but every transaction begins with the write lock held."""
    return engine.execution_options(**{WRITE: True})


def _on_connect(dbapi_connection: sqlite3.Connection, record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
    configure(dbapi_connection)


def _on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")
