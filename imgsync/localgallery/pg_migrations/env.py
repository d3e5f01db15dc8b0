"""Alembic environment for the local gallery's PostgreSQL schema.

The gallery runs its migrations itself (imgsync.localgallery.store_pg.migrate builds the Alembic
Config in code; there is no alembic.ini) and hands over an open connection whose transaction already
holds an advisory lock, so replicas starting together upgrade the database one after the other.
The version is kept in its own table (gallery_schema_version), so the gallery can share a database
with other Alembic-managed applications.
"""

from __future__ import annotations

from alembic import context

config = context.config


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the DDL instead of running it (for review by a DBA)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or "postgresql://",
        literal_binds=True,
        version_table=config.get_main_option("version_table") or "gallery_schema_version",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "gallery migrations run through imgsync.localgallery.store_pg.migrate, which passes a connection"
        )
    context.configure(
        connection=connection, version_table=config.get_main_option("version_table"), transactional_ddl=True
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
