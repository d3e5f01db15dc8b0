"""mirror_state.settled: the fingerprint of a folder and config a complete, clean run left in sync.

A no-op reconcile compares one stat walk against it instead of reading every file's record and
planning (see pipeline.settled_fingerprint).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column: SQLite's own ADD COLUMN, no table rebuild (quick, short write lock).
    op.add_column("mirror_state", sa.Column("settled", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mirror_state") as batch:
        batch.drop_column("settled")
