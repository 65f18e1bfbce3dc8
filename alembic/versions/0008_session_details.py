"""user_sessions: the device of a login (user agent, truncated IP) and when it was last used

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 02:30:00.000000

Nullable columns: sessions opened before this migration show ``null`` until their next
refresh or use. Plain ``ADD COLUMN`` (no batch rebuild on SQLite): the table keeps its rows
and nothing else is touched.
"""

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("user_sessions", sa.Column("user_agent", sa.String(length=200), nullable=True))
    op.add_column("user_sessions", sa.Column("ip", sa.String(length=64), nullable=True))
    op.add_column("user_sessions", sa.Column("last_used_at", DateTimeUTC(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_sessions") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("ip")
        batch.drop_column("user_agent")
