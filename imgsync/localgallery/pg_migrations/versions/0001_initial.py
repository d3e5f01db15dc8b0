"""The gallery in PostgreSQL: entries, libraries, the change log, the gallery's own key, settings.

Revision ID: g0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "g0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "libraries",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("matcher", sa.Text(), nullable=False),  # which matcher wrote the library's features
    )
    op.create_table(
        "entries",
        # = the id of the change that added it: seqs grow in commit order (store.py)
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("library", sa.Text(), nullable=False),
        sa.Column("cont_sign", sa.Text(), nullable=False),
        sa.Column("brief", sa.Text(), nullable=False),
        sa.Column("tag1", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tag2", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("class_id1", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("class_id2", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("features", sa.LargeBinary(), nullable=False),
        sa.Column("extra", sa.LargeBinary(), nullable=True),  # the matcher's variable-length data
        sa.Column("copy", sa.LargeBinary(), nullable=True),  # the reduced working copy (JPEG)
        # Decides 216681 "item has existed", also between two replicas adding the same bytes at once.
        sa.UniqueConstraint("library", "cont_sign", name="entries_library_cont_sign_key"),
    )
    # JPEG and packed features do not compress: store them out of line without trying.
    op.execute("ALTER TABLE entries ALTER COLUMN copy SET STORAGE EXTERNAL")
    op.execute("ALTER TABLE entries ALTER COLUMN extra SET STORAGE EXTERNAL")
    op.create_table(
        "changes",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),  # from change_clock
        sa.Column("library", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("cont_signs", sa.Text(), nullable=False),  # ';'-separated
        sa.Column("brief", sa.Text(), nullable=True),  # update: new values (NULL = unchanged)
        sa.Column("tag1", sa.Integer(), nullable=True),
        sa.Column("tag2", sa.Integer(), nullable=True),
        sa.Column("class_id1", sa.Integer(), nullable=True),
        sa.Column("class_id2", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("kind IN ('add', 'update', 'delete')", name="changes_kind_check"),
    )
    # One row, locked by every write transaction from its first statement to its commit: change ids
    # are gap-free and commit in id order.
    op.create_table(
        "change_clock",
        sa.Column("one", sa.Boolean(), primary_key=True, server_default=sa.true()),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("one", name="change_clock_one_row"),
    )
    op.execute("INSERT INTO change_clock (one, last, pruned_through) VALUES (true, 0, 0)")
    op.create_table(
        "server_key",
        sa.Column("one", sa.Boolean(), primary_key=True, server_default=sa.true()),
        sa.Column("api_key", sa.Text(), nullable=False),
        sa.Column("secret_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("one", name="server_key_one_row"),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    # Signs access tokens along with the key's secret: a token is good on this gallery's replicas only.
    op.execute("INSERT INTO settings (key, value) VALUES ('token_realm', replace(gen_random_uuid()::text, '-', ''))")


def downgrade() -> None:
    for table in ("settings", "server_key", "change_clock", "changes", "entries", "libraries"):
        op.drop_table(table)
