"""contact cards: the full vCard of each contact, a per-owner change sequence, tombstones

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 02:30:00.000000

Each contact keeps its vCard (``card``), its ``UID`` and its CardDAV resource name (both
unique per owner), and ``sync_seq``: the owner's change sequence at its latest change.
``last_name``, ``email`` and ``phone_number`` become optional (a card needs only a name).
Existing rows get a vCard 4.0 made from their fields, ``UID`` ``urn:uuid:<id>``, name ``<id>.vcf``.

The sequence (``contact_sync``) and the tombstones of deleted contacts
(``contact_tombstones``) are kept by triggers, so every writer (the API, CardDAV, an import,
a cascade) moves them in the transaction of its change:

* an ``INSERT`` without ``sync_seq`` and an ``UPDATE`` that leaves ``sync_seq`` alone bump
  the owner's counter and stamp the row (PostgreSQL: ``BEFORE`` row triggers, one upsert of
  the counter row; SQLite: ``AFTER`` row triggers). A writer that sets ``sync_seq`` itself
  (the import takes a block of numbers at once) is left alone.
* a ``DELETE`` bumps the counter and writes a tombstone per row (PostgreSQL: one statement
  trigger with a transition table), except for an owner being deleted.

The counter row's lock is held until the writer commits, so an owner's sequence numbers
commit in order: a reader that sees number N committed has every number below N too.
Every writer locks the change counter before the contact count (migration 0004): an insert
in its ``BEFORE`` trigger, a delete in ``contact_changes_delete``, which PostgreSQL fires
before ``contact_counts_delete`` (triggers of one event fire in name order). The other order
deadlocked overlapping inserts and deletes of one owner.

The search text (``app.contacts.models.SEARCH_TEXT``) now joins ``''`` for a missing email;
its trigram index (PostgreSQL) is rebuilt for the new expression.
"""

import importlib.util
import uuid
from pathlib import Path

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SEARCH_INDEX = "ix_contacts_owner_search_trgm"
OLD_SEARCH_TEXT = "(first_name_search || ' ' || last_name_search || ' ' || email)"
SEARCH_TEXT = "(first_name_search || ' ' || last_name_search || ' ' || coalesce(email, ''))"

POSTGRES_FUNCTIONS = {
    "contact_sync_bump": """
        INSERT INTO contact_sync AS s (owner_id, seq, purged_seq) VALUES (NEW.owner_id, 1, 0)
        ON CONFLICT (owner_id) DO UPDATE SET seq = s.seq + 1
        RETURNING s.seq INTO NEW.sync_seq;
        RETURN NEW;
    """,
    # An UPDATE of the counter, never an upsert, and no tombstone for an owner being deleted
    # (their rows are gone with them; an insert would break the foreign key).
    "contact_sync_removed": """
        WITH gone AS (
            SELECT owner_id, count(*) AS n FROM removed GROUP BY owner_id
        ), bumped AS (
            UPDATE contact_sync AS s SET seq = s.seq + gone.n FROM gone
            WHERE s.owner_id = gone.owner_id AND EXISTS (SELECT 1 FROM users WHERE users.id = gone.owner_id)
            RETURNING s.owner_id, s.seq - gone.n AS base
        )
        INSERT INTO contact_tombstones (owner_id, sync_seq, contact_id, dav_name, uid, deleted_at)
        SELECT r.owner_id, bumped.base + row_number() OVER (PARTITION BY r.owner_id ORDER BY r.id),
               r.id, r.dav_name, r.uid, now()
        FROM removed AS r JOIN bumped ON bumped.owner_id = r.owner_id;
        RETURN NULL;
    """,
}

POSTGRES_TRIGGERS = {
    "contact_changes_insert": (
        "BEFORE INSERT ON contacts FOR EACH ROW WHEN (NEW.sync_seq IS NULL) EXECUTE FUNCTION contact_sync_bump()"
    ),
    "contact_changes_update": (
        "BEFORE UPDATE ON contacts FOR EACH ROW WHEN (NEW.sync_seq IS NOT DISTINCT FROM OLD.sync_seq) "
        "EXECUTE FUNCTION contact_sync_bump()"
    ),
    "contact_changes_delete": (
        "AFTER DELETE ON contacts REFERENCING OLD TABLE AS removed "
        "FOR EACH STATEMENT EXECUTE FUNCTION contact_sync_removed()"
    ),
}

_SQLITE_BUMP = (
    "INSERT INTO contact_sync (owner_id, seq, purged_seq) VALUES (NEW.owner_id, 1, 0) "
    "ON CONFLICT (owner_id) DO UPDATE SET seq = seq + 1; "
    "UPDATE contacts SET sync_seq = (SELECT seq FROM contact_sync WHERE owner_id = NEW.owner_id) "
    "WHERE id = NEW.id;"
)
#: DateTimeUTC's text form on SQLite (microseconds), so purges compare like with like.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"

# The inner UPDATE of sync_seq does not fire contact_changes_update again: its WHEN is false then.
SQLITE_TRIGGERS = {
    "contact_changes_insert": f"AFTER INSERT ON contacts WHEN NEW.sync_seq IS NULL BEGIN {_SQLITE_BUMP} END",
    "contact_changes_update": f"AFTER UPDATE ON contacts WHEN NEW.sync_seq IS OLD.sync_seq BEGIN {_SQLITE_BUMP} END",
    "contact_changes_delete": (
        "AFTER DELETE ON contacts WHEN EXISTS (SELECT 1 FROM users WHERE id = OLD.owner_id) BEGIN "  # noqa: S608
        "UPDATE contact_sync SET seq = seq + 1 WHERE owner_id = OLD.owner_id; "
        "INSERT INTO contact_tombstones (owner_id, sync_seq, contact_id, dav_name, uid, deleted_at) "
        f"SELECT OLD.owner_id, seq, OLD.id, OLD.dav_name, OLD.uid, {_SQLITE_NOW} "
        "FROM contact_sync WHERE owner_id = OLD.owner_id; END"
    ),
}

_BACKFILL_BATCH = 1000


def _counts_triggers() -> dict[str, str]:
    """Migration 0004's SQLite triggers: a table rebuild (``batch_alter_table``) drops them."""
    path = Path(__file__).with_name("0004_contact_counts.py")
    spec = importlib.util.spec_from_file_location("_migration_0004", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.SQLITE_TRIGGERS


def _backfill() -> None:
    """Give every existing row a card, a UID, a resource name and a sequence number (per owner)."""
    from app.contacts.cards import new_card, uid_of

    bind = op.get_bind()
    contacts = sa.table(
        "contacts",
        sa.column("id", GUID(length=16)),
        sa.column("owner_id", GUID(length=16)),
        sa.column("first_name", sa.String),
        sa.column("last_name", sa.String),
        sa.column("email", sa.String),
        sa.column("phone_number", sa.String),
        sa.column("birthday", sa.Date),
        sa.column("additional_data", sa.String),
        sa.column("created_at", DateTimeUTC(timezone=True)),
        sa.column("card", sa.Text),
        sa.column("uid", sa.String),
        sa.column("dav_name", sa.String),
        sa.column("sync_seq", sa.BigInteger),
    )
    rows = bind.execute(
        sa.select(
            contacts.c.id,
            contacts.c.owner_id,
            contacts.c.first_name,
            contacts.c.last_name,
            contacts.c.email,
            contacts.c.phone_number,
            contacts.c.birthday,
            contacts.c.additional_data,
        ).order_by(contacts.c.owner_id, contacts.c.created_at, contacts.c.id)
    ).all()
    update = (
        sa.update(contacts)
        .where(contacts.c.id == sa.bindparam("row_id"))
        .values(
            card=sa.bindparam("new_card"),
            uid=sa.bindparam("new_uid"),
            dav_name=sa.bindparam("new_dav_name"),
            sync_seq=sa.bindparam("new_seq"),
        )
    )
    owner: uuid.UUID | None = None
    seq = 0
    batch = []
    for row in rows:
        seq = 1 if row.owner_id != owner else seq + 1
        owner = row.owner_id
        fields = dict(row._mapping)
        batch.append(
            {
                "row_id": row.id,
                "new_card": new_card(uid_of(row.id), fields),
                "new_uid": uid_of(row.id),
                "new_dav_name": f"{row.id}.vcf",
                "new_seq": seq,
            }
        )
        if len(batch) == _BACKFILL_BATCH:
            bind.execute(update, batch)
            batch = []
    if batch:
        bind.execute(update, batch)
    op.execute(
        "INSERT INTO contact_sync (owner_id, seq, purged_seq) "
        "SELECT owner_id, max(sync_seq), 0 FROM contacts GROUP BY owner_id"
    )


def upgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    op.create_table(
        "contact_sync",
        sa.Column("owner_id", GUID(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("purged_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_contact_sync_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("owner_id", name=op.f("pk_contact_sync")),
    )
    op.create_table(
        "contact_tombstones",
        sa.Column("owner_id", GUID(length=16), nullable=False),
        sa.Column("sync_seq", sa.BigInteger(), nullable=False),
        sa.Column("contact_id", GUID(length=16), nullable=False),
        sa.Column("dav_name", sa.String(length=255), nullable=False),
        sa.Column("uid", sa.String(length=255), nullable=False),
        sa.Column("deleted_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_contact_tombstones_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("owner_id", "sync_seq", name=op.f("pk_contact_tombstones")),
    )
    op.create_index("ix_contact_tombstones_deleted_at", "contact_tombstones", ["deleted_at"])
    op.add_column("contacts", sa.Column("card", sa.Text(), nullable=True))
    op.add_column("contacts", sa.Column("uid", sa.String(length=255), nullable=True))
    op.add_column("contacts", sa.Column("dav_name", sa.String(length=255), nullable=True))
    op.add_column("contacts", sa.Column("sync_seq", sa.BigInteger(), nullable=True))
    _backfill()
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.alter_column("last_name", existing_type=sa.String(length=50), nullable=True)
        batch_op.alter_column("email", existing_type=sa.String(length=254), nullable=True)
        batch_op.alter_column("phone_number", existing_type=sa.String(length=20), nullable=True)
        batch_op.alter_column("card", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("uid", existing_type=sa.String(length=255), nullable=False)
        batch_op.alter_column("dav_name", existing_type=sa.String(length=255), nullable=False)
        batch_op.create_index("uq_contacts_owner_uid", ["owner_id", "uid"], unique=True)
        batch_op.create_index("uq_contacts_owner_dav_name", ["owner_id", "dav_name"], unique=True)
        batch_op.create_index("ix_contacts_owner_sync_seq", ["owner_id", "sync_seq"], unique=False)
    if postgres:
        op.drop_index(SEARCH_INDEX, table_name="contacts")
        op.execute(
            f"CREATE INDEX {SEARCH_INDEX} ON contacts USING gin (owner_id, {SEARCH_TEXT} gin_trgm_ops)"
        )
        for name, body in POSTGRES_FUNCTIONS.items():
            op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} END $$")
        triggers = POSTGRES_TRIGGERS
    else:
        triggers = {**_counts_triggers(), **SQLITE_TRIGGERS}
    for name, definition in triggers.items():
        op.execute(f"CREATE TRIGGER {name} {definition}")


def downgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    for name in POSTGRES_TRIGGERS if postgres else SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON contacts" if postgres else f"DROP TRIGGER {name}")
    if postgres:
        for name in POSTGRES_FUNCTIONS:
            op.execute(f"DROP FUNCTION {name}()")
        op.drop_index(SEARCH_INDEX, table_name="contacts")
    # The old schema needs the three fields: contacts made without them get placeholders.
    op.execute("UPDATE contacts SET last_name = '' WHERE last_name IS NULL")
    op.execute("UPDATE contacts SET phone_number = '' WHERE phone_number IS NULL")
    hex_id = "replace(CAST(id AS TEXT), '-', '')" if postgres else "lower(hex(id))"
    op.execute(f"UPDATE contacts SET email = {hex_id} || '@missing.invalid' WHERE email IS NULL")  # noqa: S608
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_owner_sync_seq")
        batch_op.drop_index("uq_contacts_owner_dav_name")
        batch_op.drop_index("uq_contacts_owner_uid")
        batch_op.drop_column("sync_seq")
        batch_op.drop_column("dav_name")
        batch_op.drop_column("uid")
        batch_op.drop_column("card")
        batch_op.alter_column("phone_number", existing_type=sa.String(length=20), nullable=False)
        batch_op.alter_column("email", existing_type=sa.String(length=254), nullable=False)
        batch_op.alter_column("last_name", existing_type=sa.String(length=50), nullable=False)
    if postgres:
        op.execute(
            f"CREATE INDEX {SEARCH_INDEX} ON contacts USING gin (owner_id, {OLD_SEARCH_TEXT} gin_trgm_ops)"
        )
    else:
        for name, definition in _counts_triggers().items():
            op.execute(f"CREATE TRIGGER {name} {definition}")
    op.drop_index("ix_contact_tombstones_deleted_at", table_name="contact_tombstones")
    op.drop_table("contact_tombstones")
    op.drop_table("contact_sync")
