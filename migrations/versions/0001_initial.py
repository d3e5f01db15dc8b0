"""The initial manifest: files, entries, journal, runs, mirror_state.

Revision ID: 0001
Revises:
Create Date: 2025-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mirror", sa.Text(), nullable=False),
        sa.Column("library", sa.Text(), nullable=False),
        sa.Column("cont_sign", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("brief", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("class_id1", sa.Integer(), nullable=True),
        sa.Column("class_id2", sa.Integer(), nullable=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.CheckConstraint("state IN ('live', 'adding', 'deleting')", name=op.f("ck_entries_state")),
        sa.CheckConstraint("state = 'adding' OR cont_sign IS NOT NULL",
                           name=op.f("ck_entries_cont_sign_when_added")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
        sqlite_autoincrement=True,
    )
    op.create_index("uq_entries_library_cont_sign", "entries", ["library", "cont_sign"], unique=True,
                    sqlite_where=sa.text("cont_sign IS NOT NULL"))
    op.create_index("uq_entries_mirror_content_hash", "entries", ["mirror", "library", "content_hash"], unique=True,
                    sqlite_where=sa.text("state != 'deleting'"))
    op.create_index("ix_entries_mirror", "entries", ["mirror"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mirror", sa.Text(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index("ix_runs_mirror", "runs", ["mirror", "id"], unique=False)

    op.create_table(
        "journal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("op", sa.Text(), nullable=False),
        sa.Column("mirror", sa.Text(), nullable=False),
        sa.Column("library", sa.Text(), nullable=False),
        sa.Column("entry_ids", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.CheckConstraint("op IN ('add', 'update', 'delete')", name=op.f("ck_journal_op")),
        sa.CheckConstraint("state IN ('intent', 'done', 'failed')", name=op.f("ck_journal_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journal")),
    )
    op.create_index("ix_journal_open", "journal", ["id"], unique=False, sqlite_where=sa.text("state = 'intent'"))

    op.create_table(
        "files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mirror", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=True),
        sa.Column("verdict", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.Column("hashed_at_ns", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.CheckConstraint("verdict IN ('ok', 'rejected', 'unstable', 'error')", name=op.f("ck_files_verdict")),
        sa.ForeignKeyConstraint(["entry_id"], ["entries.id"], name=op.f("fk_files_entry_id_entries"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.UniqueConstraint("mirror", "path", name=op.f("uq_files_mirror_path")),
    )
    op.create_index("ix_files_entry_id", "files", ["entry_id"], unique=False)

    op.create_table(
        "mirror_state",
        sa.Column("mirror", sa.Text(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("device", sa.BigInteger(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("judged_as", sa.Text(), nullable=True),
        sa.Column("last_run_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["last_run_id"], ["runs.id"], name=op.f("fk_mirror_state_last_run_id_runs"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("mirror", name=op.f("pk_mirror_state")),
    )


def downgrade() -> None:
    op.drop_table("mirror_state")
    op.drop_index("ix_files_entry_id", table_name="files")
    op.drop_table("files")
    op.drop_index("ix_journal_open", table_name="journal")
    op.drop_table("journal")
    op.drop_index("ix_runs_mirror", table_name="runs")
    op.drop_table("runs")
    op.drop_index("ix_entries_mirror", table_name="entries")
    op.drop_index("uq_entries_mirror_content_hash", table_name="entries")
    op.drop_index("uq_entries_library_cont_sign", table_name="entries")
    op.drop_table("entries")
