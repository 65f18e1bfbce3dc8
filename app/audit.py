"""The security audit log: one structured line per security-relevant event.

Every line goes to the ``app.audit`` logger with ``event`` and ``user_id`` fields (and the
request id, added by :mod:`app.logs` inside a request). A line names what happened and to whom,
never a secret: no password, token, link or app password ever enters one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from app.logs import current_request_id

if TYPE_CHECKING:
    from uuid import UUID

audit_logger = logging.getLogger("app.audit")

#: The events the log knows; ``audit`` refuses any other name, so the documented list stays whole.
EVENTS = frozenset(
    {
        "login",
        "login_failed",
        "password_changed",
        "password_reset",
        "email_change_requested",
        "email_changed",
        "session_ended",
        "sessions_ended",
        "app_password_created",
        "app_password_revoked",
        "app_password_failed",
        "role_changed",
        "account_deleted",
    }
)


def audit(event: str, user_id: UUID | str | None, **fields: Any) -> None:
    """Write one audit line for ``event`` done by or to ``user_id``.

    Args:
        event: One of :data:`EVENTS`.
        user_id: The account concerned (``None`` when no account matched, e.g. a failed login
            for an unknown name).
        fields: Further non-secret facts (a session id, the acting admin's id, a role).

    Raises:
        ValueError: ``event`` is not one of :data:`EVENTS`.
    """
    if event not in EVENTS:
        msg = f"unknown audit event {event!r}"
        raise ValueError(msg)
    extra = {"event": event, "user_id": None if user_id is None else str(user_id)}
    extra.update({key: str(value) if value is not None else None for key, value in fields.items()})
    # The request id is fixed on the record now: a handler that formats it later (or in
    # another context) would no longer see the request's context variable.
    audit_logger.info(event, extra={"fields": extra, "request_id": current_request_id.get()})
