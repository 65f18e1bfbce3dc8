"""app passwords: HTTP Basic credentials for CardDAV clients, stored as SHA-256 digests

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-07 02:40:00.000000

See ``app/users/models.py`` (``AppPassword``) and ``app/users/app_passwords.py``.
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_passwords",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("user_id", GUID(length=16), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("last_used_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_app_passwords_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_passwords")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_app_passwords_secret_hash")),
    )
    op.create_index("ix_app_passwords_user_id", "app_passwords", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_app_passwords_user_id", table_name="app_passwords")
    op.drop_table("app_passwords")
