"""mirror_state.fsid: the folder's filesystem id (statvfs f_fsid) at the last run that left it in step.

st_dev alone cannot tell two disks apart that the kernel mounts under the same device number (a USB
stick swapped for another in the same slot; tmpfs numbers are reused at once); ext4, xfs and btrfs derive
f_fsid from the filesystem's UUID. The delete guard compares both (folder.check_folder).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: manifests from before it compare the device only until their next clean run.
    op.add_column("mirror_state", sa.Column("fsid", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mirror_state") as batch:
        batch.drop_column("fsid")
