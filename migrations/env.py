"""Alembic environment for the imgsync manifest.

imgsync runs migrations itself (imgsync.manifest.migrate builds the Alembic Config in code; there is no
alembic.ini) and hands over an open connection whose transaction already holds SQLite's write lock, so
two processes opening the same manifest at once upgrade it one after the other, never both.
"""

from __future__ import annotations

from alembic import context

from imgsync.manifest.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the DDL instead of running it (for review)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or "sqlite://",
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "imgsync migrations run through imgsync.manifest.migrate (Store.open), which passes a connection"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later migrations rebuild tables ("batch" mode).
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
