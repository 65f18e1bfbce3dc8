"""WebDAV XML: the request bodies read safely, the multistatus and error bodies written.

Requests are parsed with :mod:`defusedxml`: a document type declaration, an entity or an
external reference is refused before anything is expanded (an XML bomb never grows), and
malformed XML is a ``400``. Only the elements of the reports this server answers are read;
anything else in a body is ignored, as RFC 4918 asks of unknown elements.

Answers are written as text, piece by piece, so a multistatus of thousands of responses is
sent as it is produced (:func:`response`, then :func:`multistatus_close`). Every value put in
them goes through :func:`text` (escaped); property values are XML fragments built here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Literal
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_403_FORBIDDEN,
)

from app.errors import AppError

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

DAV = "DAV:"
CARDDAV = "urn:ietf:params:xml:ns:carddav"
CALENDARSERVER = "http://calendarserver.org/ns/"
#: The prefixes the answers use; declared once on each answer's root element.
PREFIXES = {DAV: "D", CARDDAV: "C", CALENDARSERVER: "CS"}
_DECLARATIONS = " ".join(f'xmlns:{prefix}="{ns}"' for ns, prefix in PREFIXES.items())
XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'

#: A property or element name: ``(namespace, local name)``.
Name = tuple[str, str]

#: The address data versions served, and their media type.
VCARD_VERSIONS = ("3.0", "4.0")
VCARD_TYPES = ("text/vcard", "text/x-vcard", "text/directory")


class DavError(AppError):
    """A refused DAV request: its status and, when RFC 4918/6352/6578 names one, the precondition.

    ``condition`` is the precondition element (e.g. ``<C:valid-address-data/>``), sent in a
    ``DAV:error`` body (RFC 4918, section 16).

    Args:
        detail: What went wrong (logged, and said in the body when there is no condition).
        status_code: The HTTP status.
        condition: The precondition element, as XML built by :func:`element`.
    """

    def __init__(
        self, detail: str, *, status_code: int = HTTP_400_BAD_REQUEST, condition: str | None = None
    ) -> None:
        """Keep the status and the condition of the answer."""
        super().__init__(detail)
        self.status_code = status_code
        self.condition = condition

    def with_headers(self, **headers: str) -> DavError:
        """This error, answered with ``headers`` too (e.g. ``Allow`` on a ``405``)."""
        self.headers.update(headers)
        return self


def bad_xml(detail: str) -> DavError:
    """A ``400`` for a body that is not XML this server can read."""
    return DavError(detail)


# --------------------------------------------------------------------------- reading


def parse(body: bytes) -> Element | None:
    """The root element of a request body; ``None`` for an empty one.

    Args:
        body: The whole body (already bounded by the caller).

    Returns:
        The root element, or ``None`` when the body is empty or only whitespace.

    Raises:
        DavError: ``400`` for a DTD, an entity, an external reference or malformed XML.
    """
    if not body.strip():
        return None
    try:
        return fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise bad_xml("XML with a DTD, entities or external references is refused") from None
    except (ParseError, ValueError, UnicodeError):
        raise bad_xml("The body is not well-formed XML") from None


def name_of(node: Element) -> Name:
    """The ``(namespace, local name)`` of an element (no namespace: ``""``)."""
    tag = node.tag
    if isinstance(tag, str) and tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", str(tag)


def _child(node: Element, name: Name) -> Element | None:
    return node.find(f"{{{name[0]}}}{name[1]}")


def _children(node: Element, name: Name) -> list[Element]:
    return node.findall(f"{{{name[0]}}}{name[1]}")


@dataclass
class PropRequest:
    """Which properties a PROPFIND or REPORT asks for.

    ``kind`` is ``prop`` (the listed ``names``), ``allprop`` or ``propname``. When
    ``address-data`` is asked for, ``address_data_version`` is the vCard version wanted.
    """

    kind: Literal["prop", "allprop", "propname"] = "allprop"
    names: list[Name] = field(default_factory=list)
    address_data_version: str = "3.0"


ADDRESS_DATA: Name = (CARDDAV, "address-data")


def _address_data_version(node: Element) -> str:
    """The vCard version an ``address-data`` element asks for (RFC 6352, section 10.4)."""
    content_type = (node.get("content-type") or "text/vcard").strip().lower()
    version = (node.get("version") or "3.0").strip()
    if content_type not in VCARD_TYPES or version not in VCARD_VERSIONS:
        raise DavError(
            f"address-data {content_type} version {version} is not served (text/vcard 3.0 or 4.0)",
            status_code=HTTP_403_FORBIDDEN,
            condition=element((CARDDAV, "supported-address-data")),
        )
    return version


def parse_props(parent: Element | None) -> PropRequest:
    """The property request inside ``parent`` (a ``propfind`` or a report element).

    Args:
        parent: The element holding ``prop``, ``allprop`` or ``propname``; ``None`` means allprop.

    Returns:
        The request.
    """
    if parent is None:
        return PropRequest()
    if _child(parent, (DAV, "propname")) is not None:
        return PropRequest(kind="propname")
    prop = _child(parent, (DAV, "prop"))
    if prop is None:
        return PropRequest()
    request = PropRequest(kind="prop")
    for node in prop:
        name = name_of(node)
        if name == ADDRESS_DATA:
            request.address_data_version = _address_data_version(node)
        if name not in request.names:
            request.names.append(name)
    return request


def parse_propfind(root: Element | None) -> PropRequest:
    """A PROPFIND body (RFC 4918, section 9.1): an empty body asks for all properties.

    Raises:
        DavError: ``400`` when the root is not ``DAV:propfind``.
    """
    if root is None:
        return PropRequest()
    if name_of(root) != (DAV, "propfind"):
        raise bad_xml("A PROPFIND body is a DAV:propfind element")
    return parse_props(root)


def parse_proppatch(root: Element | None) -> list[Name]:
    """The properties a PROPPATCH body sets or removes (RFC 4918, section 9.2).

    Raises:
        DavError: ``400`` when the body is not a ``DAV:propertyupdate``.
    """
    if root is None or name_of(root) != (DAV, "propertyupdate"):
        raise bad_xml("A PROPPATCH body is a DAV:propertyupdate element")
    names: list[Name] = []
    for action in root:
        if name_of(action) not in ((DAV, "set"), (DAV, "remove")):
            continue
        for prop in _children(action, (DAV, "prop")):
            names.extend(name_of(node) for node in prop if name_of(node) not in names)
    return names


@dataclass
class TextMatch:
    """A ``text-match`` (RFC 6352, section 10.5.4)."""

    text: str
    collation: str = "i;unicode-casemap"
    match_type: Literal["equals", "contains", "starts-with", "ends-with"] = "contains"
    negate: bool = False


@dataclass
class PropFilter:
    """A ``prop-filter`` (RFC 6352, section 10.5.1): a vCard property and its tests."""

    name: str
    test: Literal["anyof", "allof"] = "anyof"
    is_not_defined: bool = False
    text_matches: list[TextMatch] = field(default_factory=list)


@dataclass
class Multiget:
    """An ``addressbook-multiget`` report (RFC 6352, section 8.7)."""

    props: PropRequest
    hrefs: list[str]


@dataclass
class Query:
    """An ``addressbook-query`` report (RFC 6352, section 8.6)."""

    props: PropRequest
    filters: list[PropFilter]
    test: Literal["anyof", "allof"] = "anyof"
    limit: int | None = None


@dataclass
class SyncCollection:
    """A ``sync-collection`` report (RFC 6578, section 3.2); ``level`` is ``""`` when the client sent none."""

    props: PropRequest
    token: str
    level: str
    limit: int | None = None


#: Collations of text-match (RFC 4790): the two every CardDAV server supports, and octets.
COLLATIONS = ("i;unicode-casemap", "i;ascii-casemap", "i;octet")
MATCH_TYPES = ("equals", "contains", "starts-with", "ends-with")
#: The largest ``limit`` honoured; more is read as "no limit" (the server pages anyway).
MAX_LIMIT = 100_000


def _limit(node: Element, name: Name) -> int | None:
    """The ``nresults`` of a ``limit`` element, if any.

    CardDAV's is ``C:limit/C:nresults`` (RFC 6352, section 10.6); a sync's ``D:limit/D:nresults``
    (RFC 6578 after RFC 5323). Either namespace is taken for ``nresults``.
    """
    limit = _child(node, name)
    if limit is None:
        return None
    nresults = _child(limit, (name[0], "nresults"))
    if nresults is None:
        nresults = _child(limit, (DAV, "nresults"))
    try:
        value = int((nresults.text or "").strip()) if nresults is not None else -1
    except ValueError:
        value = -1
    if value < 1:
        raise bad_xml("limit/nresults must be a positive integer")
    return min(value, MAX_LIMIT)


def _test(node: Element) -> Literal["anyof", "allof"]:
    test = (node.get("test") or "anyof").strip()
    if test not in ("anyof", "allof"):
        raise bad_xml("test must be anyof or allof")
    return "allof" if test == "allof" else "anyof"


def _text_match(node: Element) -> TextMatch:
    collation = (node.get("collation") or "i;unicode-casemap").strip()
    if collation not in COLLATIONS:
        raise DavError(
            f"collation {collation} is not supported",
            status_code=HTTP_403_FORBIDDEN,
            condition=element((CARDDAV, "supported-collation")),
        )
    match_type = (node.get("match-type") or "contains").strip()
    if match_type not in MATCH_TYPES:
        raise bad_xml(f"match-type must be one of {', '.join(MATCH_TYPES)}")
    negate = (node.get("negate-condition") or "no").strip()
    if negate not in ("yes", "no"):
        raise bad_xml("negate-condition must be yes or no")
    return TextMatch(
        text=node.text or "",
        collation=collation,
        match_type=match_type,  # type: ignore[arg-type]
        negate=negate == "yes",
    )


def _prop_filter(node: Element) -> PropFilter:
    name = (node.get("name") or "").strip().upper()
    if not name:
        raise bad_xml("prop-filter needs a name")
    return PropFilter(
        name=name,
        test=_test(node),
        is_not_defined=_child(node, (CARDDAV, "is-not-defined")) is not None,
        text_matches=[_text_match(match) for match in _children(node, (CARDDAV, "text-match"))],
    )


def parse_report(root: Element | None) -> Multiget | Query | SyncCollection:
    """A REPORT body: one of the three reports an address book answers.

    Raises:
        DavError: ``400`` for a malformed report, ``403`` (``DAV:supported-report``) for another.
    """
    if root is None:
        raise bad_xml("A REPORT needs a body")
    name = name_of(root)
    if name == (CARDDAV, "addressbook-multiget"):
        hrefs = [(node.text or "").strip() for node in _children(root, (DAV, "href"))]
        return Multiget(props=parse_props(root), hrefs=[href for href in hrefs if href])
    if name == (CARDDAV, "addressbook-query"):
        filter_node = _child(root, (CARDDAV, "filter"))
        filters = (
            [_prop_filter(node) for node in _children(filter_node, (CARDDAV, "prop-filter"))]
            if filter_node is not None
            else []
        )
        return Query(
            props=parse_props(root),
            filters=filters,
            test=_test(filter_node) if filter_node is not None else "anyof",
            limit=_limit(root, (CARDDAV, "limit")),
        )
    if name == (DAV, "sync-collection"):
        token = _child(root, (DAV, "sync-token"))
        level = _child(root, (DAV, "sync-level"))
        # No sync-level: a client of the drafts before RFC 6578 (sabre/dav takes them too).
        level_text = (level.text or "").strip() if level is not None else ""
        if level is not None and level_text not in ("1", "infinite"):
            raise bad_xml("sync-level must be 1 (or infinite: this book has no sub-collections)")
        return SyncCollection(
            props=parse_props(root),
            token=(token.text or "").strip() if token is not None else "",
            level=level_text,
            limit=_limit(root, (DAV, "limit")),
        )
    raise DavError(
        f"REPORT {name[1]} is not supported here",
        status_code=HTTP_403_FORBIDDEN,
        condition=element((DAV, "supported-report")),
    )


# --------------------------------------------------------------------------- writing


def text(value: str) -> str:
    """``value`` escaped for XML character data."""
    return escape(value)


def element(name: Name, inner: str = "") -> str:
    """An element (``inner`` is XML already escaped); a namespace without a prefix is declared on it."""
    ns, local = name
    prefix = PREFIXES.get(ns)
    if prefix is None:
        declaration = f" xmlns={quoteattr(ns)}"
        tag = local
    else:
        declaration = ""
        tag = f"{prefix}:{local}"
    if inner:
        return f"<{tag}{declaration}>{inner}</{tag}>"
    return f"<{tag}{declaration}/>"


def href(path: str) -> str:
    """A ``DAV:href`` element of an (already percent-encoded) path."""
    return f"<D:href>{text(path)}</D:href>"


def status_line(code: int) -> str:
    """``HTTP/1.1 <code> <reason>``."""
    return f"HTTP/1.1 {code} {HTTPStatus(code).phrase}"


def multistatus_open() -> bytes:
    """The start of a ``DAV:multistatus`` body, namespaces declared."""
    return f"{XML_DECLARATION}<D:multistatus {_DECLARATIONS}>".encode()


def multistatus_close(sync_token: str | None = None) -> bytes:
    """The end of a multistatus body, with the collection's new ``sync-token`` after a sync report."""
    token = f"<D:sync-token>{text(sync_token)}</D:sync-token>" if sync_token is not None else ""
    return f"{token}</D:multistatus>".encode()


def response(
    path: str, found: list[tuple[Name, str]], missing: list[Name], missing_status: int = 404
) -> bytes:
    """One ``DAV:response`` with a propstat for the properties found and one for the others.

    Args:
        path: The resource's path (percent-encoded).
        found: The properties with a value, each with its inner XML.
        missing: The properties asked for that the resource does not have.
        missing_status: The status of the ``missing`` propstat (``404``; ``403`` for PROPPATCH).

    Returns:
        The encoded element.
    """
    parts = ["<D:response>", href(path)]
    if found:
        props = "".join(element(name, value) for name, value in found)
        parts.append(
            f"<D:propstat><D:prop>{props}</D:prop><D:status>{status_line(200)}</D:status></D:propstat>"
        )
    if missing:
        props = "".join(element(name) for name in missing)
        parts.append(
            f"<D:propstat><D:prop>{props}</D:prop><D:status>{status_line(missing_status)}</D:status></D:propstat>"
        )
    if not found and not missing:
        parts.append(f"<D:propstat><D:prop/><D:status>{status_line(200)}</D:status></D:propstat>")
    parts.append("</D:response>")
    return "".join(parts).encode()


def status_response(path: str, code: int, error: str | None = None) -> bytes:
    """A ``DAV:response`` with a status only (a missing card, a deleted member, a truncated sync)."""
    body = f"<D:error>{error}</D:error>" if error else ""
    return f"<D:response>{href(path)}<D:status>{status_line(code)}</D:status>{body}</D:response>".encode()


def error_body(condition: str) -> bytes:
    """A ``DAV:error`` body holding one precondition element (RFC 4918, section 16)."""
    return f"{XML_DECLARATION}<D:error {_DECLARATIONS}>{condition}</D:error>".encode()
