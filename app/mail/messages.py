"""The mails the service sends, each as HTML and plain text from Jinja templates.

Templates live in ``app/templates/mail/<name>.html`` and ``<name>.txt``; links are built
from ``PUBLIC_BASE_URL`` so they point at the public address, not at the request's host.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from app.security.tokens import sign_claims

if TYPE_CHECKING:
    from app.config import Settings

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "mail"

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def render(template: str, settings: Settings, *, to: str, subject: str, **context: Any) -> EmailMessage:
    """Build a mail from the ``template`` pair (``.txt`` and ``.html``).

    Args:
        template: The templates' base name in ``app/templates/mail``.
        settings: The application settings (sender, public URL).
        to: The recipient's address.
        subject: The subject line.
        **context: Values for the templates.

    Returns:
        A multipart/alternative message ready to send.
    """
    values = {"subject": subject, "base_url": settings.public_base_url.rstrip("/"), **context}
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="contacts.local")
    message.set_content(_env.get_template(f"{template}.txt").render(values))
    message.add_alternative(_env.get_template(f"{template}.html").render(values), subtype="html")
    return message


def link(settings: Settings, path: str) -> str:
    """An absolute link to ``path`` under ``PUBLIC_BASE_URL``."""
    return settings.public_base_url.rstrip("/") + path


def confirm_email(settings: Settings, *, to: str, username: str, token: str) -> EmailMessage:
    """The "confirm your email" mail, with the confirmation link."""
    return render(
        "confirm_email",
        settings,
        to=to,
        subject="Confirm your email for Contacts API",
        username=username,
        link=link(settings, f"/api/auth/confirmed_email/{token}"),
        hours=settings.confirm_token_hours,
    )


def reset_password(settings: Settings, *, to: str, username: str, token: str) -> EmailMessage:
    """The "reset your password" mail, with the reset link."""
    return render(
        "reset_password",
        settings,
        to=to,
        subject="Reset your Contacts API password",
        username=username,
        link=link(settings, f"/api/auth/confirm_update_password/{token}"),
        minutes=settings.reset_token_minutes,
    )


def password_changed(settings: Settings, *, to: str, username: str) -> EmailMessage:
    """The "your password was changed" notice."""
    return render(
        "password_changed",
        settings,
        to=to,
        subject="Your Contacts API password was changed",
        username=username,
        link=link(settings, "/api/auth/update_password"),
    )


def confirm_email_change(
    settings: Settings, *, to: str, username: str, new_email: str, token: str
) -> EmailMessage:
    """The "confirm your new address" mail, sent to the new address with the email change link."""
    return render(
        "confirm_email_change",
        settings,
        to=to,
        subject="Confirm your new email for Contacts API",
        username=username,
        new_email=new_email,
        link=link(settings, f"/api/auth/confirm_email_change/{token}"),
        hours=settings.email_change_token_hours,
    )


def email_change_requested(settings: Settings, *, to: str, username: str, new_email: str) -> EmailMessage:
    """The notice to the current address that a change to ``new_email`` was asked for."""
    return render(
        "email_change_requested",
        settings,
        to=to,
        subject="A change of your Contacts API email was requested",
        username=username,
        new_email=new_email,
    )


def email_changed(settings: Settings, *, to: str, username: str, new_email: str) -> EmailMessage:
    """The notice to the former address that the account's email is now ``new_email``."""
    return render(
        "email_changed",
        settings,
        to=to,
        subject="Your Contacts API email was changed",
        username=username,
        new_email=new_email,
    )


def account_deleted(settings: Settings, *, to: str, username: str, by_admin: bool = False) -> EmailMessage:
    """The goodbye notice: the account and its data were erased (by its owner or an admin)."""
    return render(
        "account_deleted",
        settings,
        to=to,
        subject="Your Contacts API account was deleted",
        username=username,
        by_admin=by_admin,
    )


#: The mails the outbox can hold, by kind: each builder takes the settings, ``to`` and its params.
KINDS = {
    "confirm_email": confirm_email,
    "reset_password": reset_password,
    "password_changed": password_changed,
    "confirm_email_change": confirm_email_change,
    "email_change_requested": email_change_requested,
    "email_changed": email_changed,
    "account_deleted": account_deleted,
}


def build(settings: Settings, kind: str, *, to: str, params: dict[str, Any]) -> EmailMessage:
    """Render an outbox row's mail.

    Args:
        settings: The application settings (sender, public URL, link lifetimes).
        kind: A key of :data:`KINDS`.
        to: The recipient.
        params: The values stored with the row.

    Returns:
        The message.

    Raises:
        KeyError: Unknown kind.
    """
    values = dict(params)
    if "claims" in values:
        # The row holds the link token's claims, signed only now: the outbox holds no usable link.
        values["token"] = sign_claims(settings.secret_key, values.pop("claims"))
    return KINDS[kind](settings, to=to, **values)
