"""The CardDAV server: one ASGI application answering every method under ``/dav/``.

Resources (``{user}`` is the authenticated user's id; any other id is a ``404``, exactly like
a path that does not exist)::

    /dav/                                    root: names the current user's principal
    /dav/principals/{user}/                  principal: names the address book home
    /dav/addressbooks/{user}/                home: holds one address book
    /dav/addressbooks/{user}/contacts/       the address book (the contacts store)
    /dav/addressbooks/{user}/contacts/{name} a card (``GET``/``HEAD``/``PUT``/``DELETE``)

Every method but ``OPTIONS`` needs HTTP Basic credentials (the account's email and an app
password, checked by :func:`app.users.app_passwords.authenticate_basic`). Request bodies are
read incrementally and refused past :data:`MAX_BODY` bytes, whatever ``Content-Length`` says.
A listing (``PROPFIND`` depth 1, ``sync-collection``, ``addressbook-query``) is streamed from
the store's batches, so its memory does not grow with the book.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, unquote, urlsplit
from uuid import UUID

from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_204_NO_CONTENT,
    HTTP_207_MULTI_STATUS,
    HTTP_301_MOVED_PERMANENTLY,
    HTTP_304_NOT_MODIFIED,
    HTTP_400_BAD_REQUEST,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_405_METHOD_NOT_ALLOWED,
    HTTP_409_CONFLICT,
    HTTP_412_PRECONDITION_FAILED,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_507_INSUFFICIENT_STORAGE,
)

from app.contacts.cards import CardError, CardTooLargeError, CardWithoutNameError, serialize_card
from app.contacts.controller import contact_store
from app.contacts.store import (
    ContactNotFoundError,
    StaleContactError,
    SyncTokenExpiredError,
    UidConflictError,
)
from app.dav import xml
from app.dav.query import card_matches
from app.dav.xml import CALENDARSERVER, CARDDAV, DAV, DavError, Name, element, href
from app.errors import AppError
from app.users.app_passwords import authenticate_basic

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Message, Receive, Scope, Send

    from app.contacts.store import ContactStore, StoredCard

#: Where the server is mounted.
PREFIX = "/dav"
#: The largest request body (an XML request or a card), in bytes.
MAX_BODY = 1024 * 1024
#: Bytes gathered before a streamed answer sends a chunk.
CHUNK = 32 * 1024
#: Changes read per statement by a sync report.
SYNC_BATCH = 500
#: Cards matched by a query between two yields to the event loop.
QUERY_YIELD_EVERY = 50
#: Cards read per statement by a multiget.
MULTIGET_BATCH = 500
#: The sync token of sequence ``n`` is this prefix and ``n`` (RFC 6578 wants a URI).
SYNC_TOKEN_PREFIX = "urn:x-contacts:sync:"  # noqa: S105 - not a secret

DAV_HEADER = "1, 3, addressbook"
ALLOW_COLLECTION = "OPTIONS, PROPFIND, PROPPATCH, REPORT"
ALLOW_CARD = "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH"
VCARD_MEDIA_TYPE = "text/vcard; charset=utf-8"
XML_MEDIA_TYPE = "application/xml; charset=utf-8"

Kind = Literal["root", "principal", "home", "book", "card"]


@dataclass(frozen=True)
class Target:
    """The resource a request path names."""

    kind: Kind
    user_id: UUID
    name: str | None = None

    @property
    def path(self) -> str:
        """The resource's canonical (percent-encoded) path."""
        return resource_path(self.kind, self.user_id, self.name)


def resource_path(kind: Kind, user_id: UUID, name: str | None = None) -> str:
    """The canonical path of a resource (collections end with ``/``)."""
    if kind == "root":
        return f"{PREFIX}/"
    if kind == "principal":
        return f"{PREFIX}/principals/{user_id}/"
    home = f"{PREFIX}/addressbooks/{user_id}/"
    if kind == "home":
        return home
    if kind == "book":
        return f"{home}contacts/"
    return f"{home}contacts/{quote(name or '', safe='')}"


def valid_name(name: str) -> bool:
    """Whether ``name`` can be a card's resource name (one path segment of printable text)."""
    return (
        0 < len(name) <= 255
        and name not in (".", "..")
        and "/" not in name
        and all(ch.isprintable() for ch in name)
    )


def resolve(path: str, user_id: UUID) -> Target | None:
    """The resource of ``path`` (decoded, under :data:`PREFIX`) for ``user_id``; ``None`` if none.

    Another user's id resolves to ``None``, like an unknown path.
    """
    rest = path.removeprefix(PREFIX)
    segments = [segment for segment in rest.split("/") if segment]
    own = str(user_id)
    if not segments:
        return Target("root", user_id)
    if segments[0] == "principals" and len(segments) == 2 and segments[1] == own:
        return Target("principal", user_id)
    if segments[0] != "addressbooks" or len(segments) < 2 or segments[1] != own:
        return None
    if len(segments) == 2:
        return Target("home", user_id)
    if segments[2] != "contacts" or len(segments) > 4:
        return None
    if len(segments) == 3:
        return Target("book", user_id)
    name = segments[3]
    if not valid_name(name) or rest.endswith("/"):
        return None
    return Target("card", user_id, name)


def sync_token_uri(sequence: int) -> str:
    """The sync token (and ctag) of the book at change ``sequence``."""
    return f"{SYNC_TOKEN_PREFIX}{sequence}"


def parse_sync_token(token: str) -> int | None:
    """The sequence of a sync token; ``None`` for an empty one (an initial sync).

    Raises:
        DavError: ``403`` with ``DAV:valid-sync-token`` for a token this server did not make.
    """
    if not token:
        return None
    number = token.removeprefix(SYNC_TOKEN_PREFIX)
    if token.startswith(SYNC_TOKEN_PREFIX) and number.isascii() and number.isdigit() and len(number) < 19:
        return int(number)
    raise invalid_sync_token()


def invalid_sync_token() -> DavError:
    """``403`` ``DAV:valid-sync-token``: the client must sync again from scratch (RFC 6578, 3.2)."""
    return DavError(
        "The sync token is unknown or too old: sync again without a token",
        status_code=HTTP_403_FORBIDDEN,
        condition=element((DAV, "valid-sync-token")),
    )


# --------------------------------------------------------------------------- request plumbing


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (``latin-1``), or ``None``."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, *, condition: str | None = None) -> bytes:
    """The request body, read chunk by chunk and refused past :data:`MAX_BODY` bytes.

    Args:
        scope: The request scope.
        receive: The ASGI receive channel.
        condition: The precondition element of the ``413`` (a card's ``C:max-resource-size``).

    Returns:
        The body.

    Raises:
        DavError: ``413`` when it is too large (a declared length is refused before reading).
    """
    too_large = DavError(
        f"The body is larger than {MAX_BODY} bytes",
        status_code=HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        condition=condition,
    )
    declared = header(scope, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_BODY:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


class Answer:
    """Sends one answer: :meth:`start` the status and headers, then body chunks, then :meth:`end`."""

    def __init__(self, send: Send, head_only: bool = False) -> None:
        """Send through ``send`` (``head_only``: headers only, for ``HEAD``)."""
        self._send = send
        self._head_only = head_only
        self._buffer: list[bytes] = []
        self._size = 0

    async def start(self, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers."""
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (key.lower().encode(), value.encode("latin-1")) for key, value in headers.items()
                ],
            }
        )

    async def write(self, chunk: bytes) -> None:
        """Queue ``chunk``, sending the queue once it is large enough."""
        self._buffer.append(chunk)
        self._size += len(chunk)
        if self._size >= CHUNK:
            await self._flush(more=True)

    async def end(self) -> None:
        """Send what is queued and close the body."""
        await self._flush(more=False)

    async def _flush(self, *, more: bool) -> None:
        body = b"" if self._head_only else b"".join(self._buffer)
        self._buffer.clear()
        self._size = 0
        message: Message = {"type": "http.response.body", "body": body, "more_body": more}
        await self._send(message)
        if more:
            # A long listing (cards converted to another vCard version) is CPU work: let the
            # other requests of this process run between chunks.
            await asyncio.sleep(0)


async def send_whole(
    send: Send,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    head_only: bool = False,
) -> None:
    """Send a complete answer with a ``Content-Length``."""
    answer = Answer(send, head_only)
    all_headers = {"DAV": DAV_HEADER, **(headers or {})}
    if status != HTTP_304_NOT_MODIFIED:
        all_headers["Content-Length"] = str(len(body))
    await answer.start(status, all_headers)
    await answer.write(body)
    await answer.end()


async def send_error(send: Send, error: AppError) -> None:
    """Answer an error: a ``DAV:error`` body when it has a precondition, else its detail as text."""
    condition = getattr(error, "condition", None)
    headers = dict(getattr(error, "headers", {}) or {})
    if condition:
        headers["Content-Type"] = XML_MEDIA_TYPE
        body = xml.error_body(condition)
    else:
        headers["Content-Type"] = "text/plain; charset=utf-8"
        body = f"{error.detail}\n".encode()
    await send_whole(send, error.status_code, body, headers)


def dav_error(error: AppError, book: str) -> AppError:
    """The DAV answer of a store error: the RFC 6352 precondition it breaks, when one is named.

    Args:
        error: What the contacts store raised.
        book: The address book's path (a conflicting card's href is built from it).

    Returns:
        A :class:`DavError`, or ``error`` itself when no precondition fits (its status stands).
    """
    if isinstance(error, DavError):
        return error
    if isinstance(error, UidConflictError):
        conflict = href(book + quote(error.href_name, safe=""))
        return DavError(
            error.detail,
            status_code=HTTP_409_CONFLICT,
            condition=element((CARDDAV, "no-uid-conflict"), conflict),
        )
    if isinstance(error, CardWithoutNameError):
        return DavError(
            error.detail, status_code=HTTP_403_FORBIDDEN, condition=element((CARDDAV, "valid-address-data"))
        )
    if isinstance(error, CardTooLargeError):
        return DavError(
            error.detail,
            status_code=HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            condition=element((CARDDAV, "max-resource-size")),
        )
    if isinstance(error, CardError):
        return DavError(
            error.detail, status_code=HTTP_400_BAD_REQUEST, condition=element((CARDDAV, "valid-address-data"))
        )
    if isinstance(error, SyncTokenExpiredError):
        return invalid_sync_token()
    if isinstance(error, StaleContactError):
        return DavError(error.detail, status_code=HTTP_412_PRECONDITION_FAILED)
    if isinstance(error, ContactNotFoundError):
        return DavError("Not found", status_code=HTTP_404_NOT_FOUND)
    return error


def not_found() -> DavError:
    """The ``404`` of a missing resource (or another user's)."""
    return DavError("Not found", status_code=HTTP_404_NOT_FOUND)


def requested_version(accept: str | None) -> str:
    """The vCard version a ``GET`` asks for in ``Accept`` (``text/vcard; version=4.0``), else ``3.0``."""
    for item in (accept or "").split(","):
        media_type, *params = (part.strip().lower() for part in item.split(";"))
        if media_type not in xml.VCARD_TYPES:
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "version" and value.strip().strip('"') in xml.VCARD_VERSIONS:
                return value.strip().strip('"')
    return "3.0"


def etag_matches(header_value: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag`` (or is ``*``)."""
    if header_value is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header_value.split(",")]
    return "*" in tags or etag in tags


# --------------------------------------------------------------------------- properties

#: Privileges of the owner on a collection and on a card (RFC 3744, section 5.4).
_COLLECTION_PRIVILEGES = (
    "read",
    "write",
    "write-properties",
    "write-content",
    "bind",
    "unbind",
    "read-current-user-privilege-set",
)
_CARD_PRIVILEGES = ("read", "write", "write-properties", "write-content", "read-current-user-privilege-set")


def _privileges(names: tuple[str, ...]) -> str:
    return "".join(f"<D:privilege>{element((DAV, name))}</D:privilege>" for name in names)


def _reports() -> str:
    reports = ((CARDDAV, "addressbook-multiget"), (CARDDAV, "addressbook-query"), (DAV, "sync-collection"))
    return "".join(
        f"<D:supported-report><D:report>{element(name)}</D:report></D:supported-report>" for name in reports
    )


#: Properties of the root, the principal and the home, which do not change.
_STATIC: dict[Kind, Callable[[UUID], dict[Name, str]]] = {
    "root": lambda user: {
        (DAV, "resourcetype"): element((DAV, "collection")),
        (DAV, "current-user-principal"): href(resource_path("principal", user)),
        (DAV, "current-user-privilege-set"): _privileges(("read",)),
    },
    "principal": lambda user: {
        (DAV, "resourcetype"): element((DAV, "collection")) + element((DAV, "principal")),
        (DAV, "current-user-principal"): href(resource_path("principal", user)),
        (DAV, "principal-URL"): href(resource_path("principal", user)),
        (CARDDAV, "addressbook-home-set"): href(resource_path("home", user)),
        (DAV, "current-user-privilege-set"): _privileges(("read",)),
    },
    "home": lambda user: {
        (DAV, "resourcetype"): element((DAV, "collection")),
        (DAV, "current-user-principal"): href(resource_path("principal", user)),
        (DAV, "owner"): href(resource_path("principal", user)),
        (CARDDAV, "addressbook-home-set"): href(resource_path("home", user)),
        (DAV, "current-user-privilege-set"): _privileges(("read",)),
    },
}

#: Book properties read from the store (the others are constant).
_BOOK_TOKEN_PROPS = {(CALENDARSERVER, "getctag"), (DAV, "sync-token")}


def book_props(user_id: UUID, sequence: int | None) -> dict[Name, str]:
    """The address book's properties (``sequence``: its change sequence, when it was read)."""
    props = {
        (DAV, "resourcetype"): element((DAV, "collection")) + element((CARDDAV, "addressbook")),
        (DAV, "displayname"): "Contacts",
        (CARDDAV, "addressbook-description"): "Your contacts",
        (CARDDAV, "supported-address-data"): "".join(
            f'<C:address-data-type content-type="text/vcard" version="{version}"/>'
            for version in xml.VCARD_VERSIONS
        ),
        (CARDDAV, "max-resource-size"): str(MAX_BODY),
        (DAV, "supported-report-set"): _reports(),
        (DAV, "current-user-principal"): href(resource_path("principal", user_id)),
        (DAV, "owner"): href(resource_path("principal", user_id)),
        (DAV, "current-user-privilege-set"): _privileges(_COLLECTION_PRIVILEGES),
    }
    if sequence is not None:
        token = xml.text(sync_token_uri(sequence))
        props[(CALENDARSERVER, "getctag")] = token
        props[(DAV, "sync-token")] = token
    return props


def card_props(card: StoredCard, version: str | None) -> dict[Name, str]:
    """A card's properties; ``address-data`` in ``version`` when it is asked for."""
    props = {
        (DAV, "resourcetype"): "",
        (DAV, "getetag"): xml.text(card.etag),
        (DAV, "getcontenttype"): VCARD_MEDIA_TYPE,
        (DAV, "current-user-privilege-set"): _privileges(_CARD_PRIVILEGES),
    }
    if version is not None:
        props[xml.ADDRESS_DATA] = xml.text(serialize_card(card.card, version))  # type: ignore[arg-type]
    return props


def select_props(
    available: dict[Name, str], request: xml.PropRequest
) -> tuple[list[tuple[Name, str]], list[Name]]:
    """The found and missing properties of a resource for a property request."""
    if request.kind == "allprop":
        return [(name, value) for name, value in available.items() if name != xml.ADDRESS_DATA], []
    if request.kind == "propname":
        return [(name, "") for name in available], []
    found = [(name, available[name]) for name in request.names if name in available]
    missing = [name for name in request.names if name not in available]
    return found, missing


def wants(request: xml.PropRequest, names: set[Name] | Name) -> bool:
    """Whether a property request needs any of ``names`` (allprop and propname need all)."""
    wanted = {names} if isinstance(names, tuple) else names
    return request.kind != "prop" or any(name in wanted for name in request.names)


def _address_version(request: xml.PropRequest) -> str | None:
    return (
        request.address_data_version if request.kind == "prop" and xml.ADDRESS_DATA in request.names else None
    )


# --------------------------------------------------------------------------- the server


class CardDav:
    """The CardDAV ASGI application, mounted at :data:`PREFIX` by :mod:`app.dav.routes`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request under ``/dav``."""
        app: Litestar = scope["app"]
        method = scope["method"].upper()
        user_id: UUID | None = None
        try:
            if method == "OPTIONS":
                await self.options(send)
                return
            user_id = await authenticate_basic(app, scope)
            target = resolve(self._path(scope), user_id)
            if target is None:
                raise not_found()
            handler = self._handlers().get(method)
            if handler is None:
                status = (
                    HTTP_403_FORBIDDEN if method in ("MKCOL", "MOVE", "COPY") else HTTP_405_METHOD_NOT_ALLOWED
                )
                allow = ALLOW_CARD if target.kind == "card" else ALLOW_COLLECTION
                raise DavError(f"{method} is not supported here", status_code=status).with_headers(
                    Allow=allow
                )
            await handler(contact_store(app.state), target, scope, receive, send)
        except AppError as error:
            book = resource_path("book", user_id) if user_id is not None else f"{PREFIX}/"
            await send_error(send, dav_error(error, book))

    def _handlers(self) -> dict[str, Callable[..., Awaitable[None]]]:
        return {
            "PROPFIND": self.propfind,
            "PROPPATCH": self.proppatch,
            "REPORT": self.report,
            "GET": self.get,
            "HEAD": self.get,
            "PUT": self.put,
            "DELETE": self.delete,
        }

    @staticmethod
    def _path(scope: Scope) -> str:
        # The raw path as sent: the mount's scope path is cut below the prefix, and Litestar
        # adds a "/" at its end (a card's name never ends with one).
        raw = scope.get("raw_path")
        path = raw.decode("latin-1").partition("?")[0] if raw else PREFIX + scope["path"]
        if "%" not in path:
            return path
        try:
            return unquote(path, errors="strict")
        except UnicodeDecodeError:  # not UTF-8 once decoded: no resource has such a name
            return f"{PREFIX}/\x00"

    @staticmethod
    async def options(send: Send) -> None:
        """``OPTIONS``: the DAV compliance classes and the methods (no credentials needed)."""
        await send_whole(send, HTTP_200_OK, headers={"Allow": f"{ALLOW_COLLECTION}, GET, HEAD, PUT, DELETE"})

    # ------------------------------------------------------------------ PROPFIND

    async def propfind(
        self, store: ContactStore, target: Target, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """``PROPFIND`` at depth 0 or 1 (RFC 4918, section 9.1); ``infinity`` is refused."""
        depth = (header(scope, b"depth") or "0").strip().lower()
        if depth == "infinity":
            raise DavError(
                "Depth: infinity is not supported",
                status_code=HTTP_403_FORBIDDEN,
                condition=element((DAV, "propfind-finite-depth")),
            )
        if depth not in ("0", "1"):
            raise DavError("Depth must be 0 or 1")
        request = xml.parse_propfind(xml.parse(await read_body(scope, receive)))
        user = target.user_id
        card: StoredCard | None = None
        if target.kind == "card":
            card = await store.card_by_name(user, target.name or "")
            if card is None:
                raise not_found()
        sequence = None
        if target.kind == "book" or (depth == "1" and target.kind == "home"):
            sequence = await store.sync_token(user) if wants(request, _BOOK_TOKEN_PROPS) else None

        answer = Answer(send)
        await answer.start(HTTP_207_MULTI_STATUS, {"DAV": DAV_HEADER, "Content-Type": XML_MEDIA_TYPE})
        await answer.write(xml.multistatus_open())
        if card is not None:
            await answer.write(xml.response(target.path, *select_props(card_props(card, None), request)))
        elif target.kind == "book":
            await answer.write(xml.response(target.path, *select_props(book_props(user, sequence), request)))
            if depth == "1":
                async for member in store.iter_cards(user):
                    await answer.write(
                        xml.response(
                            resource_path("card", user, member.name),
                            *select_props(card_props(member, None), request),
                        )
                    )
        else:
            await answer.write(xml.response(target.path, *select_props(_STATIC[target.kind](user), request)))
            if depth == "1" and target.kind == "home":
                book = resource_path("book", user)
                await answer.write(xml.response(book, *select_props(book_props(user, sequence), request)))
            elif depth == "1" and target.kind == "root":
                principal = resource_path("principal", user)
                await answer.write(
                    xml.response(principal, *select_props(_STATIC["principal"](user), request))
                )
        await answer.write(xml.multistatus_close())
        await answer.end()

    async def proppatch(
        self, _store: ContactStore, target: Target, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """``PROPPATCH``: no property here is writable; each named one answers ``403`` (RFC 4918, 9.2)."""
        names = xml.parse_proppatch(xml.parse(await read_body(scope, receive)))
        body = (
            xml.multistatus_open()
            + xml.response(target.path, [], names, missing_status=HTTP_403_FORBIDDEN)
            + xml.multistatus_close()
        )
        await send_whole(send, HTTP_207_MULTI_STATUS, body, {"Content-Type": XML_MEDIA_TYPE})

    # ------------------------------------------------------------------ REPORT

    async def report(
        self, store: ContactStore, target: Target, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """``REPORT`` on the address book: multiget, query or sync-collection."""
        report = xml.parse_report(xml.parse(await read_body(scope, receive)))
        if target.kind != "book":
            raise DavError(
                "Reports are answered on the address book",
                status_code=HTTP_403_FORBIDDEN,
                condition=element((DAV, "supported-report")),
            )
        if isinstance(report, xml.SyncCollection):
            depth = (header(scope, b"depth") or "0").strip()
            if report.level and depth != "0":
                # RFC 6578, section 3.2: the report is only defined for Depth 0, the level being
                # the sync-level element. A client of the earlier drafts sends no sync-level and
                # its Depth is the level, as sabre/dav (Nextcloud) reads it: taken as it is.
                raise DavError("sync-collection is only defined with Depth: 0")
            await self.sync_collection(store, target.user_id, report, send)
        elif isinstance(report, xml.Multiget):
            await self.multiget(store, target.user_id, report, send)
        else:
            await self.query(store, target.user_id, report, send)

    async def multiget(self, store: ContactStore, user: UUID, report: xml.Multiget, send: Send) -> None:
        """``addressbook-multiget`` (RFC 6352, section 8.7): each named card, or a ``404`` for it."""
        book = resource_path("book", user)
        version = _address_version(report.props)
        answer = await _start_multistatus(send)
        for start in range(0, len(report.hrefs), MULTIGET_BATCH):
            hrefs = report.hrefs[start : start + MULTIGET_BATCH]
            names = {sent: _member_name(sent, book) for sent in hrefs}
            found = {
                card.name: card for card in await store.cards_by_names(user, [n for n in names.values() if n])
            }
            for sent, name in names.items():
                card = found.get(name) if name else None
                if card is None:
                    await answer.write(xml.status_response(sent, HTTP_404_NOT_FOUND))
                else:
                    path = resource_path("card", user, card.name)
                    await answer.write(
                        xml.response(path, *select_props(card_props(card, version), report.props))
                    )
        await answer.write(xml.multistatus_close())
        await answer.end()

    async def query(self, store: ContactStore, user: UUID, report: xml.Query, send: Send) -> None:
        """``addressbook-query`` (RFC 6352, section 8.6): the matching cards, at most ``limit``."""
        version = _address_version(report.props)
        answer = await _start_multistatus(send)
        sent = 0
        checked = 0
        async for card in store.iter_cards(user):
            checked += 1
            if checked % QUERY_YIELD_EVERY == 0:
                # Reading cards is CPU work (~0.25 ms each): let other requests run meanwhile.
                await asyncio.sleep(0)
            if not card_matches(card.card, report):
                continue
            if report.limit is not None and sent >= report.limit:
                # RFC 6352, section 8.6.1: the request-URI answers 507 when results were cut.
                await answer.write(
                    xml.status_response(
                        resource_path("book", user),
                        HTTP_507_INSUFFICIENT_STORAGE,
                        element((DAV, "number-of-matches-within-limits")),
                    )
                )
                break
            path = resource_path("card", user, card.name)
            await answer.write(xml.response(path, *select_props(card_props(card, version), report.props)))
            sent += 1
        await answer.write(xml.multistatus_close())
        await answer.end()

    async def sync_collection(
        self, store: ContactStore, user: UUID, report: xml.SyncCollection, send: Send
    ) -> None:
        """``sync-collection`` (RFC 6578): what changed since the token, deleted members as ``404``.

        An empty token is an initial sync: every card, then the token read before them (a card
        changed meanwhile is reported again next time). Otherwise (or with a ``limit``) the
        change log is read in batches after the token's sequence; a ``limit`` cuts it with a
        ``507`` for the book and the token of what was sent, to continue from.
        """
        since = parse_sync_token(report.token)
        version = _address_version(report.props)
        book = resource_path("book", user)
        if since is None and report.limit is None:
            sequence = await store.sync_token(user)
            answer = await _start_multistatus(send)
            async for card in store.iter_cards(user):
                await answer.write(
                    xml.response(
                        resource_path("card", user, card.name),
                        *select_props(card_props(card, version), report.props),
                    )
                )
            await answer.write(xml.multistatus_close(sync_token_uri(sequence)))
            await answer.end()
            return
        batch = min(report.limit or SYNC_BATCH, SYNC_BATCH)
        changes = await store.changes(
            user, since, batch
        )  # an expired token is refused before the answer starts
        answer = await _start_multistatus(send)
        sent = 0
        while True:
            for card in changes.changed:
                await answer.write(
                    xml.response(
                        resource_path("card", user, card.name),
                        *select_props(card_props(card, version), report.props),
                    )
                )
            for name in changes.gone_names():  # a name deleted, then made again, is the new card
                await answer.write(xml.status_response(resource_path("card", user, name), HTTP_404_NOT_FOUND))
            sent += len(changes.changed) + len(changes.deleted)
            if not changes.more:
                break
            if report.limit is not None and sent >= report.limit:
                await answer.write(
                    xml.status_response(
                        book, HTTP_507_INSUFFICIENT_STORAGE, element((DAV, "number-of-matches-within-limits"))
                    )
                )
                break
            changes = await store.changes(user, changes.next, batch)
        await answer.write(xml.multistatus_close(sync_token_uri(changes.next)))
        await answer.end()

    # ------------------------------------------------------------------ cards

    async def get(
        self, store: ContactStore, target: Target, scope: Scope, _receive: Receive, send: Send
    ) -> None:
        """``GET``/``HEAD`` of a card, in the vCard version ``Accept`` names (3.0 by default)."""
        if target.kind != "card":
            raise DavError(
                "Only cards can be read with GET", status_code=HTTP_405_METHOD_NOT_ALLOWED
            ).with_headers(Allow=ALLOW_COLLECTION)
        card = await store.card_by_name(target.user_id, target.name or "")
        if card is None:
            raise not_found()
        head_only = scope["method"].upper() == "HEAD"
        headers = {"ETag": card.etag, "Vary": "Accept"}
        if etag_matches(header(scope, b"if-none-match"), card.etag):
            await send_whole(send, HTTP_304_NOT_MODIFIED, headers=headers)
            return
        body = serialize_card(card.card, requested_version(header(scope, b"accept"))).encode()  # type: ignore[arg-type]
        await send_whole(
            send, HTTP_200_OK, body, {**headers, "Content-Type": VCARD_MEDIA_TYPE}, head_only=head_only
        )

    async def put(
        self, store: ContactStore, target: Target, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """``PUT`` of a card: create or replace, honouring ``If-Match`` and ``If-None-Match: *``."""
        if target.kind != "card":
            raise DavError(
                "Only cards can be written with PUT", status_code=HTTP_405_METHOD_NOT_ALLOWED
            ).with_headers(Allow=ALLOW_COLLECTION)
        content_type = (header(scope, b"content-type") or "text/vcard").partition(";")[0].strip().lower()
        if content_type not in xml.VCARD_TYPES:
            raise DavError(
                f"A card is sent as text/vcard (got {content_type or 'none'})",
                status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                condition=element((CARDDAV, "supported-address-data")),
            )
        body = await read_body(scope, receive, condition=element((CARDDAV, "max-resource-size")))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise DavError(
                "A card is UTF-8 text", condition=element((CARDDAV, "valid-address-data"))
            ) from None
        if_none_match = header(scope, b"if-none-match")
        if_match = header(scope, b"if-match")
        if (
            if_match is not None
            and if_match.strip() == "*"
            and await store.card_by_name(target.user_id, target.name or "") is None
        ):
            # RFC 9110, 13.1.1: "*" matches any current representation, and there is none.
            raise DavError("There is no card to replace", status_code=HTTP_412_PRECONDITION_FAILED)
        card, created = await store.put_card(
            target.user_id,
            target.name or "",
            text,
            if_match=if_match,
            if_none_match_any=if_none_match is not None and if_none_match.strip() == "*",
        )
        await send_whole(
            send, HTTP_201_CREATED if created else HTTP_204_NO_CONTENT, headers={"ETag": card.etag}
        )

    async def delete(
        self, store: ContactStore, target: Target, scope: Scope, _receive: Receive, send: Send
    ) -> None:
        """``DELETE`` of a card (``If-Match`` honoured); collections cannot be deleted."""
        if target.kind != "card":
            raise DavError("Collections cannot be deleted", status_code=HTTP_403_FORBIDDEN)
        await store.delete_card(target.user_id, target.name or "", if_match=header(scope, b"if-match"))
        await send_whole(send, HTTP_204_NO_CONTENT)


async def _start_multistatus(send: Send) -> Answer:
    answer = Answer(send)
    await answer.start(HTTP_207_MULTI_STATUS, {"DAV": DAV_HEADER, "Content-Type": XML_MEDIA_TYPE})
    await answer.write(xml.multistatus_open())
    return answer


def _member_name(sent: str, book: str) -> str | None:
    """The card name an href (a path or a URL, percent-encoded) names in ``book``, if any."""
    try:
        path = unquote(urlsplit(sent).path, errors="strict")
    except (ValueError, UnicodeDecodeError):
        return None
    book_decoded = unquote(book)
    if not path.startswith(book_decoded):
        return None
    name = path[len(book_decoded) :]
    return name if valid_name(name) else None


async def well_known(scope: Scope, _receive: Receive, send: Send) -> None:
    """``/.well-known/carddav`` (RFC 6764, section 5): ``301`` to the DAV root, for any method."""
    del scope
    await send_whole(send, HTTP_301_MOVED_PERMANENTLY, headers={"Location": f"{PREFIX}/"})
