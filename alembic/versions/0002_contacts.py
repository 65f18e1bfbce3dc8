"""contacts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 07:36:13.428525
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC

from alembic import op

sa.GUID = GUID
sa.DateTimeUTC = DateTimeUTC

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: Columns with a trigram index (substring search) on PostgreSQL.
TRIGRAM_COLUMNS = ("first_name_search", "last_name_search", "email")


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("owner_id", sa.GUID(length=16), nullable=False),
        sa.Column("first_name", sa.String(length=50), nullable=False),
        sa.Column("last_name", sa.String(length=50), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("phone_number", sa.String(length=20), nullable=False),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.Column("additional_data", sa.String(length=500), nullable=True),
        sa.Column("first_name_search", sa.String(length=150), nullable=False),
        sa.Column("last_name_search", sa.String(length=150), nullable=False),
        sa.Column("birthday_md", sa.SmallInteger(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_contacts_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index("uq_contacts_owner_email", ["owner_id", "email"], unique=True)
        batch_op.create_index("ix_contacts_owner_created", ["owner_id", "created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_contacts_owner_first_name", ["owner_id", "first_name_search", "id"], unique=False
        )
        batch_op.create_index(
            "ix_contacts_owner_last_name", ["owner_id", "last_name_search", "id"], unique=False
        )
        batch_op.create_index("ix_contacts_owner_birthday", ["owner_id", "birthday", "id"], unique=False)
        batch_op.create_index("ix_contacts_owner_birthday_md", ["owner_id", "birthday_md"], unique=False)

    if op.get_context().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for column in TRIGRAM_COLUMNS:
            op.create_index(
                f"ix_contacts_{column}_trgm",
                "contacts",
                [column],
                unique=False,
                postgresql_using="gin",
                postgresql_ops={column: "gin_trgm_ops"},
            )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for column in TRIGRAM_COLUMNS:
            op.drop_index(f"ix_contacts_{column}_trgm", table_name="contacts")
        # The extension stays: other objects may use it, and dropping it needs more rights.
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_owner_birthday_md")
        batch_op.drop_index("ix_contacts_owner_birthday")
        batch_op.drop_index("ix_contacts_owner_last_name")
        batch_op.drop_index("ix_contacts_owner_first_name")
        batch_op.drop_index("ix_contacts_owner_created")
        batch_op.drop_index("uq_contacts_owner_email")

    op.drop_table("contacts")
