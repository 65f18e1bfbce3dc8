"""contacts: owner + joined search keys in one trigram index (PostgreSQL)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:40:00.000000

A substring search (``q``) used to OR three trigram indexes that hold every owner's rows
and AND the result with the owner's rows: the cost grew with the whole table. This index
holds the owner (``btree_gin``) and the trigrams of the three search keys joined
(``app.contacts.models.SEARCH_TEXT``), so one scan yields the owner's candidates only.
Other dialects have no trigram index and get nothing here.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEX = "ix_contacts_owner_search_trgm"
#: Must stay the expression of ``SEARCH_TEXT`` as PostgreSQL prints it, or queries miss the index.
SEARCH_TEXT = "(first_name_search || ' ' || last_name_search || ' ' || email)"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    # Trusted extension (PostgreSQL 13+): the database owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.execute(f"CREATE INDEX {INDEX} ON contacts USING gin (owner_id, {SEARCH_TEXT} gin_trgm_ops)")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.drop_index(INDEX, table_name="contacts")
    # The extension stays, as pg_trgm does in 0002: other objects may use it.
