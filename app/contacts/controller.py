"""Contacts routes: the current user's address book.

Handlers parse the request, take the owner from the authenticated user and call one store
method. A malformed contact id is a ``404`` like any id that names none of the user's contacts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import anyio
from litestar import Controller, Request, Response, Router, delete, get, patch, post, put
from litestar.datastructures import ResponseHeader, State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import Body, FromQuery, HeaderParameter, JSONBody, PathParameter, QueryParameter
from litestar.response import Stream
from litestar.status_codes import (
    HTTP_201_CREATED,
    HTTP_204_NO_CONTENT,
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_410_GONE,
    HTTP_412_PRECONDITION_FAILED,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
)

from app.config import Settings
from app.contacts import exchange
from app.contacts.schemas import (
    Contact,
    ContactBirthday,
    ContactChanges,
    ContactCreate,
    ContactOrderBy,
    ContactPage,
    ContactSortOrder,
    ContactUpdate,
    ExportFormat,
    ImportResult,
)
from app.contacts.store import ContactNotFoundError, ContactStore
from app.errors import error_response
from app.http import MULTIPART_OVERHEAD
from app.input import SINGLE_LINE
from app.ratelimit import IMPORT, limited
from app.users.schemas import CurrentUser

_STORE_KEY = "contact_store"
_IMPORT_LIMITER_KEY = "contact_import_limiter"
#: Imports reading their files at once in one process; more wait their turn.
IMPORT_THREADS = 2

#: Typed ``str`` so that a malformed id is a ``404`` like an unknown one; documented as the uuid it is.
ContactId = Annotated[str, PathParameter(description="The contact's id.", format="uuid", max_length=64)]
IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="Write only if the contact still has this ETag (else 412).",
        required=False,
    ),
]
#: A sync token as the changes feed writes it (opaque to clients: digits today).
SYNC_TOKEN_FORM = r"^[0-9]{1,18}$"  # noqa: S105 (a pattern, not a secret)
#: A search filter: one line of text (control characters are a 400, see app/input.py).
Filter = Annotated[str | None, QueryParameter(max_length=254, pattern=SINGLE_LINE, required=False)]


_AUTH = {HTTP_401_UNAUTHORIZED: error_response("Missing, invalid or expired access token")}
_NOT_FOUND = {HTTP_404_NOT_FOUND: error_response("No such contact among yours (or a malformed id)")}
_INVALID = {HTTP_400_BAD_REQUEST: error_response("Invalid body: the failing field is named in `extra`")}
_CONFLICT = {HTTP_409_CONFLICT: error_response("You already have a contact with this email")}
_STALE = {HTTP_412_PRECONDITION_FAILED: error_response("If-Match does not name the contact's current ETag")}
_ETAG = [
    ResponseHeader(
        name="ETag",
        description="The contact's version: send it as `If-Match` to write only over this version.",
        documentation_only=True,
    )
]


@dataclass
class ContactsUpload:
    """The multipart form of an import."""

    #: A vCard (3.0/4.0) file or a CSV file with the export's columns.
    file: UploadFile


def contact_store(state: State) -> ContactStore:
    """The application's contacts store (made on first use, kept in its state).

    Handlers take ``state`` (resolved in place) rather than a dependency: Litestar would call
    a provider on every request, and resolves two dependencies of one level in a task group.

    Args:
        state: The application state (its :class:`~app.db.DirectPool` and settings).

    Returns:
        The store.
    """
    store = state.get(_STORE_KEY)
    if store is None:
        store = state[_STORE_KEY] = ContactStore(state.direct_pool, state.settings)
    return store


def _contact_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        # Ids are opaque to clients: a malformed one names no contact.
        raise ContactNotFoundError from None


def import_limiter(state: State) -> anyio.CapacityLimiter:
    """The worker threads the imports of this process share (made on first use, on the app's loop).

    Each import reads its file in a thread; bounding them keeps a burst of imports from
    crowding the event loop's thread out of the interpreter.

    Args:
        state: The application state.

    Returns:
        The limiter.
    """
    limiter = state.get(_IMPORT_LIMITER_KEY)
    if limiter is None:
        limiter = state[_IMPORT_LIMITER_KEY] = anyio.CapacityLimiter(IMPORT_THREADS)
    return limiter


def _with_etag(contact: Contact, tag: str, status_code: int = 200) -> Response[Contact]:
    return Response(contact, status_code=status_code, headers={"ETag": tag})


@dataclass
class _ExportOperation(Operation):
    """Documents the export's real ``200`` bodies: vCard or CSV text, not JSON."""

    def __post_init__(self) -> None:
        response = (self.responses or {}).get("200")
        if isinstance(response, OpenAPIResponse):
            response.content = {
                media_type: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, description=what))
                for media_type, what in (
                    ("text/vcard", "vCard 4.0 cards"),
                    ("text/csv", "CSV, a header row first"),
                )
            }


class ContactController(Controller):
    """CRUD, search, birthdays of the current user's contacts."""

    path = "/api/contacts"
    tags = ["contacts"]

    @get(
        "/",
        summary="List and search contacts",
        responses={**_AUTH, HTTP_400_BAD_REQUEST: error_response("A query parameter is out of range")},
    )
    async def list_contacts(
        self,
        request: Request[CurrentUser, Any, Any],
        state: State,
        first_name: Filter = None,
        last_name: Filter = None,
        email: Filter = None,
        q: Filter = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="Page size (1-100).")] = 20,
        offset: Annotated[int, QueryParameter(ge=0, description="Contacts to skip.")] = 0,
        order_by: FromQuery[ContactOrderBy] = "created_at",
        sort_order: FromQuery[ContactSortOrder] = "asc",
    ) -> ContactPage:
        """Your contacts a page at a time.

        ``first_name``, ``last_name`` and ``email`` are case-insensitive substrings (any script;
        ``%`` and ``_`` match themselves), combined with AND; ``q`` matches any of the three.
        Contacts without a birthday come last when ordering by birthday.
        """
        return await contact_store(state).list_contacts(
            request.user.id,
            first_name=first_name,
            last_name=last_name,
            email=email,
            q=q,
            order_by=order_by,
            descending=sort_order == "desc",
            limit=limit,
            offset=offset,
        )

    @post(
        "/",
        summary="Create a contact",
        status_code=HTTP_201_CREATED,
        response_headers=_ETAG,
        responses={**_AUTH, **_INVALID, **_CONFLICT},
    )
    async def create_contact(
        self,
        request: Request[CurrentUser, Any, Any],
        data: JSONBody[ContactCreate],
        state: State,
    ) -> Response[Contact]:
        """Add a contact. Names are trimmed, the email lower-cased, the phone number stored as E.164."""
        contact, tag = await contact_store(state).add_contact(request.user.id, data)
        return _with_etag(contact, tag, HTTP_201_CREATED)

    @get(
        "/birthdays",
        summary="Upcoming birthdays",
        operation_id="upcoming_birthdays",
        responses={**_AUTH, HTTP_400_BAD_REQUEST: error_response("days is not between 0 and 365")},
    )
    async def birthdays(
        self,
        request: Request[CurrentUser, Any, Any],
        state: State,
        days: Annotated[int, QueryParameter(ge=0, le=365, description="Days ahead of today (0-365).")] = 7,
    ) -> list[ContactBirthday]:
        """Contacts whose birthday falls from today through ``days`` ahead, soonest first.

        "Today" is in the configured time zone; the window wraps the new year; a 29 February
        birthday is celebrated on 28 February in common years.
        """
        return await contact_store(state).upcoming_birthdays(request.user.id, days)

    @get(
        "/changes",
        summary="What changed since a sync token",
        operation_id="contact_changes",
        responses={
            **_AUTH,
            HTTP_400_BAD_REQUEST: error_response(
                "since is not a token of this API, or limit is out of range"
            ),
            HTTP_410_GONE: error_response(
                "The token is older than the kept deletions (30 days or more): sync again without one"
            ),
        },
    )
    async def changes(
        self,
        request: Request[CurrentUser, Any, Any],
        state: State,
        since: Annotated[
            str | None,
            QueryParameter(
                description="The `next` of an earlier answer; leave it out for every contact.",
                pattern=SYNC_TOKEN_FORM,
                max_length=20,
                required=False,
            ),
        ] = None,
        limit: Annotated[
            int, QueryParameter(ge=1, le=1000, description="Changes per answer (1-1000).")
        ] = 100,
    ) -> ContactChanges:
        """Incremental sync: the contacts created or changed and the ids deleted after ``since``.

        Without ``since``: every contact, and a token. With it: each contact changed since
        then once, in its latest state, and the ids of the contacts deleted since then,
        oldest change first. At most ``limit`` per answer: while ``more`` is true, ask again
        at once with ``next``. Keep the last ``next`` for the next sync. Deletions are kept
        30 days: an older token gets ``410`` (sync again without ``since``).
        """
        found = await contact_store(state).changes(
            request.user.id, None if since is None else int(since), limit
        )
        return ContactChanges(
            changed=found.contacts,
            deleted=[gone.id for gone in found.deleted],
            next=str(found.next),
            more=found.more,
        )

    @get(
        "/export",
        summary="Export contacts (vCard 4.0 or CSV)",
        operation_class=_ExportOperation,
        response_headers=[
            ResponseHeader(
                name="Content-Disposition",
                description='`attachment; filename="contacts.vcf"` (or `contacts.csv`).',
                documentation_only=True,
            )
        ],
        responses={
            **_AUTH,
            HTTP_400_BAD_REQUEST: error_response("format is neither vcard nor csv"),
        },
    )
    async def export_contacts(
        self,
        request: Request[CurrentUser, Any, Any],
        state: State,
        export_format: Annotated[
            ExportFormat, QueryParameter(name="format", description="`vcard` (4.0, default) or `csv`.")
        ] = "vcard",
    ) -> Stream:
        """Every one of your contacts, streamed as ``text/vcard`` or ``text/csv``.

        vCard export writes each contact's full card (every property it holds), as vCard 4.0;
        CSV has the JSON fields.
        """
        store = contact_store(state)

        async def body() -> AsyncIterator[str]:
            if export_format == "csv":
                yield exchange.csv_header()
                async for batch in store.export_batches(request.user.id):
                    yield exchange.csv_rows(batch)
            else:
                async for cards in store.card_batches(request.user.id):
                    yield exchange.vcards(card.card for card in cards)

        # Litestar appends "; charset=utf-8" to text/* types itself.
        media_type, name = (
            ("text/csv", "contacts.csv") if export_format == "csv" else ("text/vcard", "contacts.vcf")
        )
        return Stream(
            body(), media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    @get(
        "/{contact_id:str}",
        summary="Get a contact",
        response_headers=_ETAG,
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def get_contact(
        self,
        request: Request[CurrentUser, Any, Any],
        contact_id: ContactId,
        state: State,
    ) -> Response[Contact]:
        """One of your contacts, with its ``ETag``."""
        contact, tag = await contact_store(state).get_contact(request.user.id, _contact_id(contact_id))
        return _with_etag(contact, tag)

    @put(
        "/{contact_id:str}",
        summary="Replace a contact",
        response_headers=_ETAG,
        responses={**_AUTH, **_INVALID, **_NOT_FOUND, **_CONFLICT, **_STALE},
    )
    async def replace_contact(
        self,
        request: Request[CurrentUser, Any, Any],
        contact_id: ContactId,
        data: JSONBody[ContactCreate],
        state: State,
        if_match: IfMatch = None,
    ) -> Response[Contact]:
        """Replace every field: optional fields left out are cleared."""
        contact, tag = await contact_store(state).replace_contact(
            request.user.id, _contact_id(contact_id), data, if_match
        )
        return _with_etag(contact, tag)

    @patch(
        "/{contact_id:str}",
        summary="Change some fields of a contact",
        response_headers=_ETAG,
        responses={**_AUTH, **_INVALID, **_NOT_FOUND, **_CONFLICT, **_STALE},
    )
    async def update_contact(
        self,
        request: Request[CurrentUser, Any, Any],
        contact_id: ContactId,
        data: JSONBody[ContactUpdate],
        state: State,
        if_match: IfMatch = None,
    ) -> Response[Contact]:
        """Change only the fields present; ``null`` clears ``birthday`` or ``additional_data``."""
        contact, tag = await contact_store(state).patch_contact(
            request.user.id, _contact_id(contact_id), data, if_match
        )
        return _with_etag(contact, tag)

    @delete(
        "/{contact_id:str}",
        summary="Delete a contact",
        status_code=HTTP_204_NO_CONTENT,
        responses={**_AUTH, **_NOT_FOUND},
    )
    async def delete_contact(
        self,
        request: Request[CurrentUser, Any, Any],
        contact_id: ContactId,
        state: State,
    ) -> None:
        """Delete one of your contacts."""
        await contact_store(state).remove_contact(request.user.id, _contact_id(contact_id))


class ContactImportController(Controller):
    """The import; registered under a router carrying the import's size limit."""

    path = "/api/contacts"
    tags = ["contacts"]

    @post(
        "/import",
        summary="Import contacts (vCard or CSV)",
        opt=limited(IMPORT),
        status_code=200,
        responses={
            **_AUTH,
            HTTP_400_BAD_REQUEST: error_response(
                "Not a multipart form with a `file` field, or not vCard/CSV UTF-8 text"
            ),
            HTTP_413_REQUEST_ENTITY_TOO_LARGE: error_response(
                "The file is larger than IMPORT_MAX_BYTES, or holds more than IMPORT_MAX_CARDS contacts"
            ),
            HTTP_415_UNSUPPORTED_MEDIA_TYPE: error_response("The body is not multipart/form-data"),
        },
    )
    async def import_contacts(
        self,
        request: Request[CurrentUser, Any, Any],
        data: Annotated[ContactsUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
        state: State,
    ) -> ImportResult:
        """Add the contacts of a vCard (3.0/4.0, as phones and Google export them) or CSV file.

        Bad entries are reported with their line and the good ones kept; an entry whose email
        you already have is skipped, so importing the same file twice creates nothing new.
        A file may hold at most ``IMPORT_MAX_CARDS`` contacts (10,000 by default).
        """
        if not isinstance(data.file, UploadFile):
            raise exchange.UnreadableFileError("The field `file` must be a file", field="file")
        limit = state.settings.import_max_bytes
        content = await data.file.read(limit + 1)
        if len(content) > limit:
            raise exchange.FileTooLargeError(limit)
        return await contact_store(state).import_file(request.user.id, content, limiter=import_limiter(state))


def contacts_import_router(settings: Settings) -> Router:
    """The import route, with a body limit sized for an import file instead of a JSON body.

    Args:
        settings: The application settings.

    Returns:
        A router holding :class:`ContactImportController`.
    """
    return Router(
        path="/",
        route_handlers=[ContactImportController],
        request_max_body_size=settings.import_max_bytes + MULTIPART_OVERHEAD,
    )
