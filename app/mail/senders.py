"""Mail sender adapters, chosen once by :func:`make_mailer` in ``create_app``.

* :class:`SmtpMailer` when ``SMTP_HOST`` is set (aiosmtplib; plain, STARTTLS or TLS).
* :class:`LogMailer` otherwise: the development sender, which writes each mail — links
  included, that is its purpose — to the ``app.mail`` logger at INFO.

The job runner (``app.jobs.runner``) sends the outbox's mails through the chosen sender and
owns retries; a sender only sends once or raises.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import aiosmtplib

from app.logs import UNMASKED

if TYPE_CHECKING:
    from email.message import EmailMessage

    from app.config import Settings, SmtpTls

logger = logging.getLogger("app.mail")


class Mailer(Protocol):
    """Something that sends a ready :class:`~email.message.EmailMessage`."""

    async def send(self, message: EmailMessage) -> None:
        """Send ``message`` or raise."""


class SmtpMailer:
    """Sends through an SMTP server with aiosmtplib."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: SmtpTls = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Configure the server.

        Args:
            host: The server's host name.
            port: The server's port.
            tls: ``none``, ``starttls`` (upgrade a plain connection) or ``ssl`` (TLS from the start).
            username: Login user name, if the server wants one.
            password: Login password.
            timeout: Seconds to wait for the server at each step.
        """
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.password = password
        self.timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        """Send ``message`` over a fresh connection.

        A send that fails or is cancelled (a stopping runner) drops the connection at once:
        aiosmtplib's own clean-up would first wait up to ``timeout`` for a polite QUIT.

        Raises:
            aiosmtplib.SMTPException: The server refused or could not be reached.
        """
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.tls == "ssl",
            start_tls=self.tls == "starttls",
            timeout=self.timeout,
        )
        try:
            await client.connect()
            await client.send_message(message)
        except BaseException:
            client.close()
            raise
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()  # the mail is accepted: a failed goodbye changes nothing


class LogMailer:
    """The development sender: writes each mail to the log instead of sending it."""

    async def send(self, message: EmailMessage) -> None:
        """Log the recipient, subject and plain-text body of ``message``."""
        body = message.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        # The links are this sender's purpose: the log's token masking leaves them.
        logger.info("mail to %s: %s\n%s", message["To"], message["Subject"], text, extra=UNMASKED)


def make_mailer(settings: Settings) -> Mailer:
    """The sender for these settings: SMTP when ``SMTP_HOST`` is set, the log otherwise.

    Args:
        settings: The application settings.

    Returns:
        A :class:`Mailer`.
    """
    if settings.smtp_host:
        return SmtpMailer(
            settings.smtp_host,
            settings.smtp_port,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=settings.smtp_password,
        )
    if settings.app_env == "production":
        # The log sender writes confirmation and reset links to the log: fine on a laptop,
        # a leak anywhere else. Production should always name an SMTP server.
        logger.warning("SMTP_HOST is not set: mails (with their links) are written to the log")
    return LogMailer()
