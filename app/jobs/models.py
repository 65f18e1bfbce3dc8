"""The ``outbox`` table: one row per mail to send, written with the change that causes it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

#: Waiting for its first or next attempt.
PENDING = "pending"
#: Delivered (kept 7 days, then deleted by housekeeping).
SENT = "sent"
#: Given up: a permanent refusal, or still failing after ``MAIL_RETRY_HOURS``.
DEAD = "dead"


class OutboxMail(UUIDv7AuditBase):
    """A mail to deliver: its kind (template), recipient and the values it is rendered from.

    ``params`` hold the values of the templates; a link's token is kept as its unsigned claims
    (signed when the mail is rendered), so the table holds no usable link. Rows are never logged
    and are deleted 7 days after delivery.
    """

    __tablename__ = "outbox"

    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(254))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(8), default=PENDING, server_default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)

    # The runner's query: due pending rows, oldest first.
    __table_args__ = (Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),)
