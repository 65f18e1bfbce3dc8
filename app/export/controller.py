"""The data export route: the current user's account, contacts and avatar as a zip."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import ResponseHeader, State
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.response import Stream
from litestar.status_codes import HTTP_401_UNAUTHORIZED, HTTP_429_TOO_MANY_REQUESTS, HTTP_502_BAD_GATEWAY
from sqlalchemy.ext.asyncio import AsyncSession

from app import cache
from app.contacts.controller import contact_store
from app.errors import error_response
from app.export.service import ExportService
from app.ratelimit import EXPORT, limited
from app.users.app_passwords import AppPasswordService
from app.users.deps import user_service_on
from app.users.schemas import CurrentUser

#: The archive's media type.
ZIP = "application/zip"
#: The same bytes, for a client that asks for generic binary (generated clients know no zip).
BINARY = "application/octet-stream"


@dataclass
class _ZipOperation(Operation):
    """Documents the real ``200`` body: a zip archive, not JSON."""

    def __post_init__(self) -> None:
        response = (self.responses or {}).get("200")
        if isinstance(response, OpenAPIResponse):
            schema = Schema(
                type=OpenAPIType.STRING,
                format="binary",
                description="A zip: account.json, contacts.vcf, contacts.csv and the avatar file "
                "when the service stores it.",
            )
            response.content = {ZIP: OpenAPIMediaType(schema=schema), BINARY: OpenAPIMediaType(schema=schema)}


class ExportController(Controller):
    """The current user's data, to take away."""

    path = "/api/users/me/export"
    tags = ["users"]

    @get(
        "/",
        summary="Export my data (zip)",
        operation_id="export_my_data",
        operation_class=_ZipOperation,
        opt=limited(EXPORT),
        response_headers=[
            ResponseHeader(
                name="Content-Disposition",
                description='`attachment; filename="contacts-api-export-YYYY-MM-DD.zip"`.',
                documentation_only=True,
            )
        ],
        responses={
            HTTP_401_UNAUTHORIZED: error_response("Missing, invalid or expired access token"),
            HTTP_429_TOO_MANY_REQUESTS: error_response(
                "More exports this hour than RATE_LIMIT_EXPORT_PER_HOUR; see Retry-After"
            ),
            HTTP_502_BAD_GATEWAY: error_response("The avatar storage failed"),
        },
    )
    async def export(
        self, request: Request[CurrentUser, Any, Any], state: State, db_session: NamedDependency[AsyncSession]
    ) -> Stream:
        """Everything the service keeps about you, streamed as a zip.

        ``account.json`` (your user, your sessions, your app passwords' names), ``contacts.vcf``
        (every contact's full card, vCard 4.0), ``contacts.csv`` (the JSON fields) and, when the
        service stores your avatar, ``avatar.<ext>``. Sent as ``application/zip``; as
        ``application/octet-stream`` to a client whose ``Accept`` prefers that (the same bytes).
        """
        service = ExportService(
            users=user_service_on(db_session, request.app),
            app_passwords=AppPasswordService(db_session, request.app.stores.get(cache.USER_CACHE)),
            contacts=contact_store(state),
            storage=state.avatar_storage,
        )
        export = await service.prepare(request.user.id)
        return Stream(
            export.chunks(),
            # application/zip unless the client prefers generic binary (Accept: */* takes the zip).
            media_type=request.accept.best_match([ZIP, BINARY], default=ZIP) or ZIP,
            headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
        )
