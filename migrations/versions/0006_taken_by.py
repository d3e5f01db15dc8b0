"""files.taken_by: the gallery id of another record's entry that holds this file's image.

A file is refused when the gallery answers its add with an entry another record already owns (another
mirror's copy of the image, or a file the cloud judges the same picture). That refusal is not about the
file: once the owning entry is deleted the file must be tried again, so the refusal remembers which entry
it waits on, and forgetting that entry clears it (store.Store._forget_entries).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: refusals recorded before it wait for the file to change, as they did.
    op.add_column("files", sa.Column("taken_by", sa.Text(), nullable=True))
    op.create_index("ix_files_taken_by", "files", ["taken_by"], sqlite_where=sa.text("taken_by IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_files_taken_by", table_name="files")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("taken_by")
