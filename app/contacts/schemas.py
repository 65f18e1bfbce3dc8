"""Contact DTOs (msgspec Structs) and the input rules the contract sets.

Structs validate shape and limits while the body is decoded (a failure is a ``400`` naming
the field); ``__post_init__`` then normalises what the contract says is stored normalised
(trimmed names, lower-cased email, canonical phone number).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
import phonenumbers

from app.input import END, MULTI_LINE, NO_CONTROLS, EmailText, email_field

#: Letters a phone number may be written with.
PHONE_PATTERN = rf"^[0-9 +\-()]+{END}"
#: Digits a phone number needs at least, whatever its punctuation.
MIN_PHONE_DIGITS = 5

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=50, examples=["Ada"]), NO_CONTROLS]
#: Checked and normalised by :func:`app.input.normalize_email` (the one email rule).
Email = EmailText
Phone = Annotated[
    str, msgspec.Meta(min_length=7, max_length=20, pattern=PHONE_PATTERN, examples=["+380 50 123 4567"])
]
#: Free text over several lines: TAB, LF and CR are kept, other control characters refused.
Note = Annotated[str, msgspec.Meta(max_length=500, pattern=MULTI_LINE)]

ContactOrderBy = Literal["first_name", "last_name", "birthday", "created_at"]
ContactSortOrder = Literal["asc", "desc"]
ExportFormat = Literal["vcard", "csv"]


def normalize_phone(raw: str, region: str) -> str:
    """The canonical form of a phone number: E.164 when the number allows it.

    A number ``phonenumbers`` cannot read as a possible number (in ``region`` when it has no
    country code) is kept as its digits, with a leading ``+`` if it had one.

    Args:
        raw: The number as written (digits, spaces, ``+ - ( )``).
        region: Region for numbers written without a country code.

    Returns:
        The stored form.

    Raises:
        ValueError: The number has too few digits to be one.
    """
    digits = "".join(ch for ch in raw if ch.isdigit())
    if len(digits) < MIN_PHONE_DIGITS:
        msg = f"phone_number: needs at least {MIN_PHONE_DIGITS} digits"
        raise ValueError(msg)
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return ("+" if raw.strip().startswith("+") else "") + digits


def normalize_name(field: str, value: str) -> str:
    """Trim a name; it must keep at least one character.

    Raises:
        ValueError: Nothing but spaces.
    """
    value = value.strip()
    if not value:
        msg = f"{field}: must not be blank"
        raise ValueError(msg)
    return value


class _ContactFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The writable fields, all present (create and full replace)."""

    first_name: Name
    last_name: Name | None = None
    email: Email | None = None
    phone_number: Phone | None = None
    birthday: date | None = None
    additional_data: Note | None = None

    def __post_init__(self) -> None:
        self.first_name = normalize_name("first_name", self.first_name)
        if self.last_name is not None:
            self.last_name = normalize_name("last_name", self.last_name)
        if self.email is not None:
            self.email = email_field(self.email)


class ContactCreate(_ContactFields, forbid_unknown_fields=True, kw_only=True):
    """A new contact (``POST``), also the body of a full replace (``PUT``).

    Only ``first_name`` is required; a ``PUT`` without an optional field clears it.
    ``phone_number`` is normalised by the service (the default region is a setting).
    """


class ContactUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A partial update (``PATCH``): only the fields present change; ``null`` clears an optional one."""

    first_name: Name | msgspec.UnsetType = msgspec.UNSET
    last_name: Name | msgspec.UnsetType | None = msgspec.UNSET
    email: Email | msgspec.UnsetType | None = msgspec.UNSET
    phone_number: Phone | msgspec.UnsetType | None = msgspec.UNSET
    birthday: date | msgspec.UnsetType | None = msgspec.UNSET
    additional_data: Note | msgspec.UnsetType | None = msgspec.UNSET

    def __post_init__(self) -> None:
        """Normalise the fields present, as the contract stores them."""
        if self.first_name is not msgspec.UNSET:
            self.first_name = normalize_name("first_name", self.first_name)
        if self.last_name is not msgspec.UNSET and self.last_name is not None:
            self.last_name = normalize_name("last_name", self.last_name)
        if self.email is not msgspec.UNSET and self.email is not None:
            self.email = email_field(self.email)


class Contact(msgspec.Struct, kw_only=True):
    """A contact as the API shows it."""

    id: UUID
    first_name: str
    last_name: str | None
    email: str | None
    phone_number: str | None
    birthday: date | None
    additional_data: str | None
    created_at: datetime
    updated_at: datetime


class ContactBirthday(Contact, kw_only=True):
    """A contact in the birthdays list, with the date of its next birthday (today or later)."""

    next_birthday: date


class ContactPage(msgspec.Struct, kw_only=True):
    """One page of contacts."""

    items: list[Contact]
    total: int
    limit: int
    offset: int


class ImportRowError(msgspec.Struct, kw_only=True):
    """Why one entry of an import file was not taken."""

    line: int
    detail: str


class ImportResult(msgspec.Struct, kw_only=True):
    """The outcome of an import."""

    created: int
    skipped: int
    errors: list[ImportRowError]


class ContactChanges(msgspec.Struct, kw_only=True):
    """What changed in the address book after a sync token (the changes feed)."""

    #: Contacts created or changed after the token, each once, in its latest state.
    changed: list[Contact]
    #: Ids of contacts deleted after the token.
    deleted: list[UUID]
    #: The token to ask with next time (or for the next page while ``more``).
    next: str
    #: More changes wait: ask again with ``next`` at once.
    more: bool
