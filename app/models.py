"""All models, imported in one place so that Alembic and the app see the whole metadata."""

from advanced_alchemy.base import orm_registry

from app.contacts.models import ContactCount, ContactRow
from app.jobs.models import OutboxMail
from app.users.models import AppPassword, User, UserSession

#: The metadata of every table (Alembic's target).
metadata = orm_registry.metadata

__all__ = ("AppPassword", "ContactCount", "ContactRow", "OutboxMail", "User", "UserSession", "metadata")
