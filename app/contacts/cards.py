"""vCards: each contact's full card, parsed, checked, rewritten and converted between 3.0 and 4.0.

A contact *is* its vCard (RFC 6350 for 4.0, RFC 2426 for 3.0); the JSON fields are views of a
few properties (see :meth:`Card.fields` and :func:`apply_fields`). Everything else a card holds
(more phones and emails, addresses, photos, ``X-`` properties...) is kept as received.

Cards are read with ``vobject``'s content-line parser (unfolding, parameters, groups) but
*without* its vCard behaviours: those decode every value on the way in and lose data on the way
out (a ``PHOTO`` data URI or a ``URL`` holding a comma is cut at the comma). Values stay in their
encoded form; only the properties the service writes are encoded, with ``vobject``'s escaping,
and lines are folded by ``vobject``'s serializer.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal
from uuid import UUID, uuid5

import msgspec
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from vobject.base import (
    ContentLine,
    VObjectError,
    defaultSerialize,
    getLogicalLines,
    parseLine,
    textLineToContentLine,
)
from vobject.icalendar import backslashEscape, stringToTextValues

from app.contacts.schemas import MIN_PHONE_DIGITS, ContactCreate, Phone
from app.errors import AppError

#: The largest card taken, in UTF-8 bytes (API.md: over 1 MB is a ``413``).
MAX_CARD_BYTES = 1_000_000
#: The longest ``UID`` and resource name kept (indexed columns).
MAX_UID_LENGTH = 255
#: The year Apple writes for a birthday without one (``X-APPLE-OMIT-YEAR=1604``); year-less
#: ``BDAY`` values (``--MMDD``) map to it in the JSON view.
NO_YEAR = 1604

Version = Literal["3.0", "4.0"]
_VERSIONS = ("3.0", "4.0")
#: Control characters no card may hold (TAB is allowed; line breaks only end content lines).
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: What a one-line JSON field may not hold (``app.input.SINGLE_LINE``): becomes a space in the view.
_LINE_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
#: What a note may not hold (``app.input.MULTI_LINE``): dropped from the view.
_NOTE_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CRLF = re.compile(r"\r\n?")
#: The JSON view's lengths (the columns': ``first_name``/``last_name`` and ``additional_data``).
NAME_LENGTH = 50
NOTE_LENGTH = 500
_BDAY = re.compile(r"^(?:(\d{4})-?|--)(\d{2})-?(\d{2})$")
#: Binary properties: a data URI in 4.0, ``ENCODING=b`` in 3.0.
_BINARY = ("PHOTO", "LOGO", "SOUND", "KEY")
_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(?:;[^,]*)?;base64,(.*)$", re.DOTALL | re.IGNORECASE)


class CardError(AppError):
    """A card the service cannot take: a ``400``."""

    detail = "Not a valid vCard"


class NotACardError(CardError):
    """The text is not one vCard 3.0 or 4.0."""

    detail = "Not a vCard (3.0 or 4.0)"


class CardWithoutNameError(CardError):
    """The card has neither ``FN`` nor an ``N`` with a name."""

    detail = "The vCard has no name (FN or N)"


class CardTooLargeError(CardError):
    """The card is larger than :data:`MAX_CARD_BYTES`."""

    status_code = HTTP_413_REQUEST_ENTITY_TOO_LARGE
    detail = f"The vCard is larger than {MAX_CARD_BYTES} bytes"


def _text(raw: str) -> str:
    r"""A text value unescaped (``\n``, ``\,``, ``\;``, ``\\``)."""
    return stringToTextValues(raw, listSeparator=None)[0] if raw else ""


def _components(raw: str) -> list[str]:
    """A structured value's components (``N``, ``ADR``) split at unescaped ``;``, each unescaped."""
    return stringToTextValues(raw, listSeparator=";") if raw else [""]


def _line(name: str, value: str, group: str | None = None, **params: list[str]) -> ContentLine:
    """A content line with an already encoded ``value``."""
    pairs = [(key, *values) for key, values in params.items() if values]
    return ContentLine(name, pairs, value, group=group, encoded=True)


def _read_line(text: str, number: int) -> ContentLine:
    """One unfolded content line, value left encoded; bare parameters (``TEL;CELL``) become ``TYPE``."""
    name, pairs, value, group = parseLine(text, number)
    params: dict[str, list[str]] = {}
    bare: list[str] = []
    for pair in pairs:
        if len(pair) == 1:
            bare.append(pair[0])
        else:
            params.setdefault(pair[0].upper(), []).extend(pair[1:])
    if "ENCODING" in params or "QUOTED-PRINTABLE" in bare:
        # vobject's constructor decodes quoted-printable: such lines (rare, vCard 2.1) go through it.
        line = textLineToContentLine(text, number)
        bare, params = line.singletonparams, line.params
        line.singletonparams = []
    else:
        # The attributes ContentLine.__init__ sets, without its per-attribute __setattr__
        # hook, which cost a third of an import's time.
        line = ContentLine.__new__(ContentLine)
        line.__dict__.update(
            group=group,
            behavior=None,
            parentBehavior=None,
            isNative=False,
            name=name.upper(),
            encoded=True,
            params=params,
            singletonparams=[],
            lineNumber=number,
            value=value,
        )
    if bare:
        params.setdefault("TYPE", []).extend(bare)
    return line


def _pref_rank(line: ContentLine) -> int:
    """How preferred a line is: 4.0 ``PREF=n`` (1 is most), 3.0 ``TYPE=pref``; 101 for neither."""
    for value in line.params.get("PREF", []):
        if value.isdigit():
            return int(value)
    if any(kind.lower() == "pref" for kind in line.params.get("TYPE", [])):
        return 1
    return 101


def parse_birthday(value: str) -> date | None:
    """A ``BDAY`` value (``1990-05-17``, ``19900517``, ``--0517``, with or without a time), or ``None``.

    Args:
        value: The raw value.

    Returns:
        The date (year :data:`NO_YEAR` when the card gives none), ``None`` when unreadable.
    """
    match = _BDAY.match(value.split("T")[0].strip())
    if match is None:
        return None
    year, month, day = match.groups()
    try:
        return date(int(year or NO_YEAR), int(month), int(day))
    except ValueError:
        return None


def cut(text: str, length: int) -> str:
    """``text`` cut to at most ``length`` characters, never inside a character.

    A combining mark (or a joiner, a variation selector) left at the cut goes with the
    character it belongs to, so the cut text never ends in half a letter.
    """
    if len(text) <= length:
        return text
    end = length
    while end > 0 and _continues(text[end]):
        end -= 1
    return text[:end]


def _continues(char: str) -> bool:
    """``char`` belongs to the character before it (a combining mark, a joiner, a selector)."""
    return bool(unicodedata.combining(char)) or char == "\u200d" or "\ufe00" <= char <= "\ufe0f"


def view_name(raw: str) -> str:
    """A name as the JSON view holds it: one line, trimmed, at most :data:`NAME_LENGTH` characters."""
    return cut(_LINE_CONTROLS.sub(" ", raw).strip(), NAME_LENGTH).rstrip()


def view_note(raw: str) -> str | None:
    """A note as the JSON view holds it: LF line breaks, no other control, at most :data:`NOTE_LENGTH`."""
    return cut(_NOTE_CONTROLS.sub("", _CRLF.sub("\n", raw)), NOTE_LENGTH) or None


def view_email(raw: str) -> str | None:
    """The stored form of an ``EMAIL`` value, or ``None`` when the JSON API would refuse it."""
    try:
        return msgspec.convert({"first_name": "x", "email": _text(raw).strip()}, ContactCreate).email
    except msgspec.ValidationError:
        return None


def view_phone(raw: str) -> str | None:
    """A ``TEL`` value as the JSON API would take it (``tel:`` and ``;ext=`` dropped), or ``None``.

    The store normalises it (E.164 when possible); ``None`` when the JSON API would refuse it.
    """
    phone = _text(raw).strip().removeprefix("tel:").split(";")[0]
    phone = re.sub(r"[./]", " ", phone).strip()
    try:
        msgspec.convert(phone, Phone)
    except msgspec.ValidationError:
        return None
    return phone if sum(ch.isdigit() for ch in phone) >= MIN_PHONE_DIGITS else None


@dataclass
class Card:
    """One vCard: its version and its properties in order (values still encoded)."""

    version: str
    lines: list[ContentLine] = field(default_factory=list)

    # ------------------------------------------------------------------ reading

    def first(self, name: str) -> ContentLine | None:
        """The first property called ``name``, or ``None``."""
        return next((line for line in self.lines if line.name == name), None)

    def preferred(self, name: str) -> ContentLine | None:
        """The preferred (else first) property called ``name``, or ``None``."""
        found = [line for line in self.lines if line.name == name]
        return min(found, key=_pref_rank) if found else None

    def view_line(self, name: str) -> ContentLine | None:
        """The ``EMAIL`` or ``TEL`` the JSON view shows: the most preferred one the JSON API would take.

        The JSON API's writes replace this one too, so a card whose preferred email is not
        an address (or whose number is ``"ext. 12"``) keeps it.
        """
        accept = view_email if name == "EMAIL" else view_phone
        found = sorted((line for line in self.lines if line.name == name), key=_pref_rank)
        return next((line for line in found if accept(line.value) is not None), None)

    def view(self) -> dict[str, Any]:
        """The lenient JSON view, as a card from CardDAV gets it: every value one the JSON API would take.

        Names are cut to :data:`NAME_LENGTH` characters and the note to :data:`NOTE_LENGTH`
        (control characters a JSON field refuses taken out); the email and the number are the
        :meth:`view_line` ones (``None`` when no line would do); an unreadable ``BDAY`` is
        ``None``. The card itself keeps every value as it came.

        Returns:
            ``first_name``, ``last_name``, ``email``, ``phone_number`` (not yet normalised),
            ``birthday``, ``additional_data``.

        Raises:
            CardWithoutNameError: Nothing of the name is left once cleaned.
        """
        given, family = (view_name(part) for part in self.names())
        if not given:
            raise CardWithoutNameError
        email = self.view_line("EMAIL")
        tel = self.view_line("TEL")
        note = self.first("NOTE")
        born = self._birthday(self.first("BDAY"))
        return {
            "first_name": given,
            "last_name": family or None,
            "email": view_email(email.value) if email is not None else None,
            "phone_number": view_phone(tel.value) if tel is not None else None,
            "birthday": born if isinstance(born, date) else None,
            "additional_data": view_note(_text(note.value)) if note is not None else None,
        }

    @property
    def uid(self) -> str | None:
        """The card's ``UID``, or ``None``."""
        line = self.first("UID")
        value = _text(line.value).strip() if line is not None else ""
        return value or None

    def names(self) -> tuple[str, str]:
        """``(given, family)`` from ``N``; without a given name, ``FN`` split at its first space.

        Blanks when absent (a card with ``N:Smith;;;;`` and no ``FN`` is ``("Smith", "")``).
        """
        given = family = ""
        n = self.first("N")
        if n is not None:
            parts = [*_components(n.value), "", ""]
            family, given = parts[0].strip(), parts[1].strip()
        if not given:
            fn = self.first("FN")
            first, _, last = (_text(fn.value).strip() if fn is not None else "").partition(" ")
            if first:
                given, family = first, family or last.strip()
            else:
                given, family = family, ""
        return given, family

    def fields(self) -> dict[str, Any]:
        """The JSON view as read, for the strict checks of an import.

        Keys: first_name, last_name, email, phone_number, birthday, additional_data.

        A field whose property is absent (or, for ``BDAY``, free text) is ``None``; values are
        as the card has them, for the JSON API's rules to judge (:meth:`view` is the lenient
        view of a card from CardDAV).
        """
        given, family = self.names()
        email = self.preferred("EMAIL")
        tel = self.preferred("TEL")
        bday = self.first("BDAY")
        note = self.first("NOTE")
        phone = None
        if tel is not None:
            phone = _text(tel.value).strip()
            phone = re.sub(r"[./]", " ", phone.removeprefix("tel:").split(";")[0]).strip() or None
        return {
            "first_name": given or None,
            "last_name": family or None,
            "email": (_text(email.value).strip() or None) if email is not None else None,
            "phone_number": phone,
            "birthday": self._birthday(bday),
            "additional_data": (_text(note.value) or None) if note is not None else None,
        }

    @staticmethod
    def _birthday(bday: ContentLine | None) -> date | str | None:
        """``BDAY`` as a date; a free-text one (``VALUE=text``) is none; an unreadable one stays text.

        Text left as it is fails the JSON view's date rule: the caller reports it.
        """
        if bday is None or [v.lower() for v in bday.params.get("VALUE", [])] == ["text"]:
            return None
        value = _text(bday.value)
        return parse_birthday(value) or value

    # ------------------------------------------------------------------ writing

    def set_uid(self, uid: str) -> None:
        """Give the card ``uid`` (replacing any it has)."""
        self.lines = [line for line in self.lines if line.name != "UID"]
        self.lines.insert(0, _line("UID", backslashEscape(uid)))

    def text(self) -> str:
        """The card as text: CRLF line endings, lines folded at 75 octets."""
        buffer = io.StringIO()
        # VERSION is 3.0 or 4.0 (parse_card checks it): short, nothing to escape or fold.
        buffer.write(f"BEGIN:VCARD\r\nVERSION:{self.version}\r\n")
        for line in self.lines:
            defaultSerialize(line, buffer, 75)
        buffer.write("END:VCARD\r\n")
        return buffer.getvalue()


def parse_card(text: str) -> Card:
    """Read and check one vCard.

    Args:
        text: The card.

    Returns:
        The card.

    Raises:
        CardTooLargeError: Over :data:`MAX_CARD_BYTES`.
        CardError: Control characters (such as NUL) in the text, or a ``UID`` too long.
        NotACardError: Not exactly one ``VCARD`` of version 3.0 or 4.0.
        CardWithoutNameError: Neither ``FN`` nor ``N`` names anyone.
    """
    if len(text) > MAX_CARD_BYTES or len(text.encode()) > MAX_CARD_BYTES:
        raise CardTooLargeError
    if _CONTROLS.search(text):
        msg = "The vCard holds control characters"
        raise CardError(msg)
    try:
        raw = [_read_line(line, n) for line, n in getLogicalLines(io.StringIO(text), False)]
    except (VObjectError, ValueError, IndexError):
        raise NotACardError from None
    if len(raw) < 2 or not _is(raw[0], "BEGIN") or not _is(raw[-1], "END"):
        raise NotACardError
    body = raw[1:-1]
    if any(line.name in ("BEGIN", "END") for line in body):
        raise NotACardError
    versions = [line for line in body if line.name == "VERSION"]
    if len(versions) != 1 or versions[0].value.strip() not in _VERSIONS:
        raise NotACardError
    card = Card(versions[0].value.strip(), [line for line in body if line.name != "VERSION"])
    if not card.names()[0]:
        raise CardWithoutNameError
    uid = card.uid
    if uid is not None and len(uid) > MAX_UID_LENGTH:
        msg = f"The vCard's UID is longer than {MAX_UID_LENGTH} characters"
        raise CardError(msg, field="UID")
    return card


def _is(line: ContentLine, name: str) -> bool:
    return line.name == name and line.value.strip().upper() == "VCARD"


# --------------------------------------------------------------------------- the JSON fields


def _replace(card: Card, old: ContentLine | None, new: ContentLine | None) -> None:
    """Put ``new`` where ``old`` was (or at the end); ``None`` removes ``old``."""
    if old is not None:
        index = card.lines.index(old)
        if new is None:
            del card.lines[index]
        else:
            card.lines[index] = new
    elif new is not None:
        card.lines.append(new)


def _bday_value(born: date, version: str) -> tuple[str, dict[str, list[str]]]:
    if born.year == NO_YEAR:
        if version == "4.0":
            return f"--{born:%m%d}", {}
        return born.isoformat(), {"X-APPLE-OMIT-YEAR": [str(NO_YEAR)]}
    return (f"{born:%Y%m%d}", {}) if version == "4.0" else (born.isoformat(), {})


def apply_fields(card: Card, values: dict[str, Any], rev: datetime | None = None) -> Card:
    """Rewrite the properties behind the JSON fields present in ``values``; keep every other.

    ``first_name``/``last_name`` set ``N`` (its other components kept) and ``FN``; ``email``
    and ``phone_number`` replace the ``EMAIL``/``TEL`` the view shows (:meth:`Card.view_line`:
    the preferred, else first, one the JSON API would take), keeping its parameters (``None``
    removes it); ``birthday`` sets ``BDAY``; ``additional_data`` the
    first ``NOTE``.

    Args:
        card: The card (changed in place).
        values: Some of the fields, as stored.
        rev: When the change is made: becomes the card's ``REV``.

    Returns:
        The card.
    """
    if rev is not None:
        stamp = f"{rev.astimezone(UTC):%Y%m%dT%H%M%SZ}"
        if card.version == "3.0":
            stamp = f"{rev.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
        _replace(card, card.first("REV"), _line("REV", stamp))
    if "first_name" in values or "last_name" in values:
        given, family = card.names()
        given = values.get("first_name", given) or ""
        family = values.get("last_name", family) or ""
        old = card.first("N")
        parts = [*_components(old.value), "", "", "", "", ""][:5] if old is not None else [""] * 5
        parts[0], parts[1] = family, given
        n = _line("N", ";".join(backslashEscape(part) for part in parts), **(old.params if old else {}))
        _replace(card, old, n)
        fn = card.first("FN")
        full = f"{given} {family}".strip()
        _replace(card, fn, _line("FN", backslashEscape(full), **(fn.params if fn else {})))
    if "email" in values:
        old = card.view_line("EMAIL")
        email = values["email"]
        _replace(card, old, None if email is None else _line("EMAIL", backslashEscape(email), **_params(old)))
    if "phone_number" in values:
        old = card.view_line("TEL")
        phone = values["phone_number"]
        new = None
        if phone is not None:
            params = _params(old)
            uri = old is not None and [v.lower() for v in old.params.get("VALUE", [])] == ["uri"]
            if old is None and card.version == "4.0":
                params, uri = {"VALUE": ["uri"], "TYPE": ["cell"]}, True
            elif old is None:
                params = {"TYPE": ["CELL"]}
            new = _line("TEL", f"tel:{phone}" if uri else backslashEscape(phone), **params)
        _replace(card, old, new)
    if "birthday" in values:
        old = card.first("BDAY")
        born = values["birthday"]
        new = None
        if born is not None:
            value, params = _bday_value(born, card.version)
            new = _line("BDAY", value, **params)
        _replace(card, old, new)
    if "additional_data" in values:
        old = card.first("NOTE")
        note = values["additional_data"]
        _replace(card, old, None if note is None else _line("NOTE", backslashEscape(note), **_params(old)))
    return card


def _params(line: ContentLine | None) -> dict[str, list[str]]:
    return {} if line is None else {key: list(value) for key, value in line.params.items()}


def new_card(uid: str, values: dict[str, Any], rev: datetime | None = None) -> str:
    """A vCard 4.0 holding a contact's fields, with ``uid`` as its ``UID``.

    Args:
        uid: The card's ``UID`` (:func:`uid_of` the id for contacts made through the JSON API).
        values: The fields, as stored (``None`` for absent ones).
        rev: The card's ``REV``.

    Returns:
        The card's text.
    """
    card = Card("4.0")
    card.set_uid(uid)
    fields = {name: value for name, value in values.items() if name in _FIELDS}
    return apply_fields(card, fields, rev).text()


def uid_of(contact_id: UUID) -> str:
    """The ``UID`` a card made by the service gets: its contact's id as a URN (RFC 6350 6.7.6)."""
    return f"urn:uuid:{contact_id}"


def content_uid(text: str) -> str:
    """A ``UID`` for an imported entry that has none, made from its content.

    The same entry imported again gets the same ``UID``, which the owner has already: it is
    skipped instead of copied.

    Args:
        text: The entry (a card without ``UID``, or a CSV row's fields).

    Returns:
        The ``UID``.
    """
    return uid_of(uuid5(_IMPORT_NAMESPACE, text))


def with_content_uid(card: Card) -> str:
    """Give a card without ``UID`` the one :func:`content_uid` makes of its text; return the new text.

    The card is serialized once: the ``UID`` line is put in the text after ``VERSION``, where
    :meth:`Card.set_uid` puts it among the lines (a blank ``UID`` line is replaced, the slow way).

    Args:
        card: A card whose :attr:`Card.uid` is ``None``.

    Returns:
        The card's text with its new ``UID``.
    """
    text = card.text()
    had_line = card.first("UID") is not None
    card.set_uid(content_uid(text))
    if had_line:
        return card.text()
    head = f"BEGIN:VCARD\r\nVERSION:{card.version}\r\n"
    uid_line = io.StringIO()
    defaultSerialize(card.lines[0], uid_line, 75)
    return head + uid_line.getvalue() + text[len(head) :]


_IMPORT_NAMESPACE = UUID("6f1c1d49-3a52-4f57-9a3e-0c2b8f6d7a15")


_FIELDS = ("first_name", "last_name", "email", "phone_number", "birthday", "additional_data")


# --------------------------------------------------------------------------- versions


def _to_4(line: ContentLine) -> ContentLine:
    params = _params(line)
    kinds = params.get("TYPE", [])
    if any(kind.lower() == "pref" for kind in kinds):
        kinds = [kind for kind in kinds if kind.lower() != "pref"]
        params["PREF"] = ["1"]
        if kinds:
            params["TYPE"] = kinds
        else:
            del params["TYPE"]
    value = line.value
    if line.name in _BINARY:
        encoding = [v.lower() for v in params.pop("ENCODING", [])]
        if encoding in (["b"], ["base64"]):
            kind = params.pop("TYPE", ["octet-stream"])[0].lower()
            major = {"PHOTO": "image", "LOGO": "image", "SOUND": "audio"}.get(line.name, "application")
            mime = kind if "/" in kind else f"{major}/{kind}"
            value = f"data:{mime};base64,{value}"
        elif [v.lower() for v in params.get("VALUE", [])] == ["uri"]:
            del params["VALUE"]
    elif line.name == "BDAY":
        born = parse_birthday(_text(value))
        if born is not None:
            omit = params.pop("X-APPLE-OMIT-YEAR", None)
            if omit:
                born = born.replace(year=NO_YEAR)
            value = _bday_value(born, "4.0")[0]
    return _line(line.name, value, line.group, **params)


def _to_3(line: ContentLine) -> ContentLine:
    params = _params(line)
    if params.pop("PREF", ["2"])[0] == "1":
        params["TYPE"] = [*params.get("TYPE", []), "pref"]
    value = line.value
    uri = [v.lower() for v in params.get("VALUE", [])] == ["uri"]
    if line.name == "TEL" and uri:
        del params["VALUE"]
        value = value.removeprefix("tel:")
    elif line.name in _BINARY and (match := _DATA_URI.match(value)):
        params.pop("VALUE", None)
        params["ENCODING"] = ["b"]
        if match.group(1):
            params["TYPE"] = [match.group(1).split("/")[-1].upper()]
        value = match.group(2)
    elif line.name in _BINARY and ":" in value:
        params["VALUE"] = ["uri"]
    elif line.name == "BDAY":
        born = parse_birthday(_text(value))
        if born is not None:
            value, extra = _bday_value(born, "3.0")
            params.update(extra)
    return _line(line.name, value, line.group, **params)


def serialize_card(text: str, version: Version) -> str:
    """A stored card in ``version``: itself when it is in that version already, else converted.

    The conversion changes ``VERSION``, preference (4.0 ``PREF=1`` ↔ 3.0 ``TYPE=pref``),
    binary properties (4.0 data URI ↔ 3.0 ``ENCODING=b``), ``tel:`` URIs and ``BDAY`` forms;
    3.0 gets the ``N`` it requires when the card has none.

    Args:
        text: The stored card (as :func:`parse_card` took it).
        version: ``"3.0"`` or ``"4.0"``.

    Returns:
        The card's text.
    """
    if version_of(text) == version:
        return text
    card = parse_card(text)
    convert = _to_4 if version == "4.0" else _to_3
    lines = [convert(line) for line in card.lines]
    if version == "3.0" and not any(line.name == "N" for line in lines):
        given, family = card.names()
        lines.append(_line("N", ";".join(backslashEscape(part) for part in (family, given, "", "", ""))))
    return Card(version, lines).text()


def version_of(text: str) -> str:
    """The ``VERSION`` of a stored card, read cheaply (no full parse): ``"3.0"`` or ``"4.0"``."""
    return "3.0" if text.startswith("BEGIN:VCARD\r\nVERSION:3.0\r\n") else "4.0"
