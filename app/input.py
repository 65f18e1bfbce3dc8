r"""The rules every text input obeys, in one place: control characters, emails, identifiers.

Text fields of request bodies, forms and query parameters are typed with the annotations
below, so msgspec refuses a bad value while decoding (a ``400`` naming the field) and the
OpenAPI document shows the same rule as a ``pattern``.

* **Control characters** (Unicode category ``Cc``: U+0000-U+001F, U+007F-U+009F) are refused
  in every text input. PostgreSQL text cannot hold NUL at all, SQLite's ``LIKE`` stops at it
  (so ``first_name=%00`` matched every contact), and the others end up invisible in pages,
  mails, vCards and logs. Only free text that is naturally multi-line (a contact's
  ``additional_data``) keeps TAB, LF and CR.
* **Emails** follow one rule everywhere (API, CLI, login): ``email-validator`` without DNS
  lookups; the stored form is its normalised one (NFC local part, IDNA-normalised domain),
  lower-cased.
* **Usernames** are ASCII letters, digits, ``_ . -``; compared ignoring ASCII case.

Patterns end in ``(?![\s\S])`` rather than ``$``: Python's ``$`` also matches before a final
newline, so ``"ada\n"`` passed a ``...$`` pattern. The lookahead means "end of text" in both
Python and the ECMAScript regexes of JSON Schema.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal

import msgspec
from email_validator import EmailNotValidError, validate_email

#: The end of the text, in both Python and ECMAScript regexes (``$`` is not, in Python).
END = r"(?![\s\S])"
#: One line of text: no control character at all.
SINGLE_LINE = rf"^[^\x00-\x1f\x7f-\x9f]*{END}"
#: Free text over several lines: TAB, LF and CR allowed, other control characters not.
MULTI_LINE = rf"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*{END}"
#: Letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit; never ``@``, so a
#: login value is unambiguously an email or a username.
USERNAME_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.-]*{END}"
USERNAME_MIN, USERNAME_MAX = 3, 50
#: The longest address SMTP carries (RFC 5321 path limit minus the brackets).
EMAIL_MAX = 254

#: No control characters (merge into a field's other constraints: ``Annotated[str, ..., NO_CONTROLS]``).
NO_CONTROLS = msgspec.Meta(pattern=SINGLE_LINE)

#: Any single-line text input (a generous bound; fields with a contract length set their own).
Text = Annotated[str, msgspec.Meta(max_length=4096, pattern=SINGLE_LINE)]
#: A multi-line note.
MultiLineText = Annotated[str, msgspec.Meta(pattern=MULTI_LINE)]
#: An email address as sent: validated and normalised by :func:`normalize_email` after decoding.
EmailText = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=EMAIL_MAX + 2,  # surrounding spaces are trimmed
        pattern=SINGLE_LINE,
        examples=["ada@example.com"],
        extra_json_schema={"extra": {"format": "email"}},
    ),
]
Username = Annotated[
    str,
    msgspec.Meta(
        min_length=USERNAME_MIN, max_length=USERNAME_MAX, pattern=USERNAME_PATTERN, examples=["ada"]
    ),
]

#: What a failed pattern means, in words (Litestar's message quotes the regex).
_PATTERN_MEANING = {
    SINGLE_LINE: "must not contain control characters (U+0000-U+001F, U+007F-U+009F)",
    MULTI_LINE: "must not contain control characters other than tab and line breaks",
    USERNAME_PATTERN: "letters, digits, '_', '.' and '-' only (ASCII), starting with a letter or digit",
}


def explain(message: str) -> str:
    """Replace "Expected `str` matching regex '...'" by what the pattern means, for known patterns.

    Args:
        message: A validation message.

    Returns:
        The message a person can act on.
    """
    for pattern, meaning in _PATTERN_MEANING.items():
        if repr(pattern) in message:
            return meaning
    return message


def has_controls(value: str, *, multi_line: bool = False) -> bool:
    """Whether ``value`` holds a control character the rules above refuse."""
    return re.search(MULTI_LINE if multi_line else SINGLE_LINE, value) is None


def normalize_email(value: str) -> str:
    """The one email rule: the normalised, lower-cased form of a valid address.

    ``email-validator`` checks the syntax (RFC 5322/6531: no quoted local parts, no IP
    literals, no special-use domains such as ``.test``), without DNS. Its normalised form puts
    the local part in Unicode NFC and the domain through IDNA, so canonically equivalent
    spellings are one address (U+212A KELVIN SIGN is ``K``). Lower-casing makes the address
    case-insensitive, as the contract stores it.

    Args:
        value: The address as written (surrounding spaces are ignored).

    Returns:
        The stored form.

    Raises:
        ValueError: Not an email address (the message says why).
    """
    value = value.strip(" ")
    if has_controls(value):
        msg = "must not contain control characters"
        raise ValueError(msg)
    try:
        info = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return unicodedata.normalize("NFC", info.normalized.lower())


def email_field(value: str, field: str = "email") -> str:
    """:func:`normalize_email` for a ``__post_init__``: the error names ``field``.

    Raises:
        ValueError: Not an email address, worded as :func:`field_error` does.
    """
    try:
        return normalize_email(value)
    except ValueError as exc:
        raise field_error(field, str(exc)) from None


def normalize_username(value: str) -> str:
    """The one username rule (the API's :data:`Username` and the CLI share it).

    Args:
        value: The username as written (surrounding spaces are ignored).

    Returns:
        The username, case kept.

    Raises:
        ValueError: Not an acceptable username.
    """
    value = value.strip(" ")
    if not USERNAME_MIN <= len(value) <= USERNAME_MAX:
        msg = f"a username has {USERNAME_MIN} to {USERNAME_MAX} characters"
        raise ValueError(msg)
    if re.search(USERNAME_PATTERN, value) is None:
        msg = f"a username has {_PATTERN_MEANING[USERNAME_PATTERN]}"
        raise ValueError(msg)
    return value


def login_key(value: str) -> tuple[Literal["email", "username"], str] | None:
    """What a login identifier is compared with: the normalised email, or the lower-cased username.

    The identifier goes through the very rules an account was registered with, so a value
    matches an account only if registering it would have named that account: an email
    canonically equal to the account's (NFC, case) does; a username with any non-ASCII
    character (U+212A KELVIN SIGN for ``k`` included) names no account.

    Args:
        value: The ``username`` field of the login form.

    Returns:
        ``("email", key)`` or ``("username", key)``, or ``None`` when it can name no account.
    """
    try:
        if "@" in value:
            return "email", normalize_email(value)
        return "username", normalize_username(value).lower()
    except ValueError:
        return None


def field_error(field: str, message: str) -> ValueError:
    """A ``ValueError`` for a ``__post_init__`` check, worded so that the ``400`` names ``field``.

    :func:`app.errors.http_exception_handler` reads the ``field: `` prefix back into ``key``.
    """
    return ValueError(f"{field}: {message}")
