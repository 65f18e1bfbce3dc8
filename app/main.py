"""The application factory: the one place where every part is wired together."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import YamlRenderPlugin
from litestar.openapi.spec import Tag
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig

from app import __version__, cache, metrics
from app.auth.controller import AuthController, EmailChangeController, PasswordController
from app.auth.deps import resolve_account_request
from app.compression import GzipMiddleware
from app.config import Settings, get_settings
from app.contacts.controller import ContactController, contacts_import_router
from app.contacts.store import purge_tombstones
from app.dav.routes import DAV_ROUTES
from app.db import DirectPool, make_db_config, migrate_on_startup
from app.errors import EXCEPTION_HANDLERS
from app.export.controller import ExportController
from app.health.controller import HealthController
from app.health.probes import drain_on_sigterm, livez, mark_draining, readyz
from app.http import require_declared_body
from app.jobs.cli import JobsCLIPlugin
from app.jobs.outbox import ACCOUNT_REQUEST
from app.jobs.runner import JobRunner
from app.logs import RequestLogMiddleware, configure_logging, flush_access_lines
from app.mail.senders import make_mailer
from app.openapi_document import operation_id, tidy_document_hook
from app.openapi_ui import (
    PUBLIC_OPT,
    LocalScalarRenderPlugin,
    mark_public_operations,
    oauth2_components,
    scalar_bundle,
    static_files_router,
)
from app.ratelimit import rate_limit_middleware
from app.security.auth import make_auth
from app.security.headers import make_security_headers
from app.server import ServerCLIPlugin
from app.storage.adapters import make_avatar_storage, media_route_handlers
from app.tracing import setup_tracing
from app.users.app_passwords_controller import AppPasswordController
from app.users.cli import UsersCLIPlugin
from app.users.controller import SessionsController, UsersController, avatar_router
from app.users.current import load_request_user
from app.users.devices import SessionActivity, record_session_use
from app.users.repository import delete_finished_sessions

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

#: Allocations (net of deallocations) between two young-generation collections.
GC_GEN0_THRESHOLD = 20_000

#: The HTML pages' Jinja templates (mail templates live under ``mail/``).
TEMPLATES_DIR = Path(__file__).parent / "templates"

API_DESCRIPTION = """\
Keep your address book: contacts, search and upcoming birthdays, behind real accounts
(registration with email confirmation, JWT sessions, password reset, roles and avatars).

Log in with **Authorize** (OAuth2 password flow: your email or username and password),
then try any operation.
"""

OPENAPI_TAGS = [
    Tag(name="auth", description="Registration, confirmation, login, sessions and password reset."),
    Tag(name="users", description="The current user, avatars, passwords and (for admins) roles."),
    Tag(name="contacts", description="Your contacts: CRUD, search, birthdays, vCard/CSV exchange."),
    Tag(name="health", description="Is the service able to serve."),
]


def route_handlers() -> list[ControllerRouterHandler]:
    """Every controller of the API, in the order they appear in the docs."""
    handlers: list[ControllerRouterHandler] = [
        HealthController,
        livez,
        readyz,
        AuthController,
        UsersController,
        SessionsController,
        PasswordController,
        EmailChangeController,
        AppPasswordController,
        ExportController,
        ContactController,
    ]
    return handlers


def _freeze_gc(_app: Litestar) -> None:
    # Objects alive after start-up live for the whole process: moving them out of the
    # collector's generations makes later collections (and their pauses) much cheaper.
    gc.collect()
    gc.freeze()
    # A request allocates a few hundred container objects, nearly all freed by reference
    # counting: at the default threshold (700) the collector ran every few requests. Measured
    # with bench/run.py: 20,000 cut a contact read's CPU by ~8 % and its p99 by ~1.5 ms.
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application for ``settings`` (read from the environment when omitted).

    Args:
        settings: The settings to run with; tests pass their own.

    Returns:
        The configured Litestar application.
    """
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    db_config = make_db_config(settings)
    direct_pool = DirectPool(db_config.get_engine(), settings.db_pool_size)
    auth = make_auth(settings, load_request_user)
    avatar_storage = make_avatar_storage(settings)
    mailer = make_mailer(settings)
    # The runner has an engine of its own: its polling never competes with requests for the pool.
    job_runner = JobRunner(
        make_db_config(settings).get_engine(),
        mailer,
        settings,
        housekeeping=[("sessions", delete_finished_sessions), ("contact_tombstones", purge_tombstones)],
        # `app` is the application built below, bound by the time the runner runs.
        resolvers={
            ACCOUNT_REQUEST: lambda session, to, params: resolve_account_request(app, session, to, params)
        },
    )
    tracing = setup_tracing(settings, [db_config.get_engine(), job_runner.engine])

    on_startup: list[Any] = []
    if settings.auto_migrate:
        on_startup.append(migrate_on_startup(db_config))
    on_startup += [direct_pool.open, cache.open_stores, mark_public_operations]
    on_shutdown: list[Any] = [
        mark_draining,
        job_runner.stop,
        cache.close_stores,
        direct_pool.close,
        job_runner.close,
        flush_access_lines,
    ]
    handlers: list[ControllerRouterHandler] = []
    if settings.metrics_enabled:
        handlers.append(metrics.MetricsController)
        on_startup.append(metrics.start_metrics(multiprocess=bool(settings.prometheus_multiproc_dir)))
        on_shutdown.insert(0, metrics.stop_metrics)
    if tracing is not None:  # last: the spans of the other shutdown hooks are sent too
        on_shutdown.append(tracing.shutdown)
    if settings.jobs_in_process:  # else a `litestar jobs worker` process delivers
        on_startup.append(job_runner.start)
    # After the public operations are marked: which ones need a token decides their 401.
    on_startup += [tidy_document_hook, drain_on_sigterm(settings.shutdown_delay), _freeze_gc]

    app = Litestar(
        route_handlers=[
            *route_handlers(),
            avatar_router(settings),
            contacts_import_router(settings),
            *media_route_handlers(avatar_storage),
            static_files_router(),
            scalar_bundle,
            *DAV_ROUTES,
            *handlers,
        ],
        plugins=[SQLAlchemyPlugin(config=db_config), UsersCLIPlugin(), ServerCLIPlugin(), JobsCLIPlugin()],
        dependencies={"settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False)},
        on_app_init=[auth.on_app_init],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        middleware=rate_limit_middleware(settings),
        # Every body's media type as its route declares it (415 otherwise); see app/http.py.
        before_request=require_declared_body,
        before_send=[make_security_headers("/schema", settings.trusted_proxies)],
        # After the answer is sent: when due, the session's time of last use (no cost before the answer).
        after_response=record_session_use,
        exception_handlers=EXCEPTION_HANDLERS,
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins)) if settings.cors_origins else None,
        request_max_body_size=settings.max_request_bytes,
        openapi_config=OpenAPIConfig(
            title="Contacts API",
            version=__version__,
            description=API_DESCRIPTION,
            tags=OPENAPI_TAGS,
            # The document and the API reference are public.
            openapi_router=Router(
                "/schema", route_handlers=[], include_in_schema=False, opt={PUBLIC_OPT: True}
            ),
            render_plugins=[LocalScalarRenderPlugin(), YamlRenderPlugin()],
            components=oauth2_components(auth),
            operation_id_creator=operation_id,
        ),
        template_config=TemplateConfig(directory=TEMPLATES_DIR, engine=JinjaTemplateEngine),
        state=State(
            {
                "settings": settings,
                "db_config": db_config,
                "direct_pool": direct_pool,
                "avatar_storage": avatar_storage,
                "mailer": mailer,
                "job_runner": job_runner,
                "session_activity": SessionActivity(),
            }
        ),
        # Logging is set up by configure_logging alone (Litestar's own would add a second format).
        logging_config=None,
        debug=False,
    )
    # Outermost, as Litestar does with its OpenTelemetry middleware: route middleware would miss
    # the answers of the auth and rate-limit middleware (401, 429) and of the router (404, 405).
    app.asgi_handler = RequestLogMiddleware(
        GzipMiddleware(app.asgi_handler),
        observe=metrics.observe_request if settings.metrics_enabled else None,
    )
    if tracing is not None:  # outside the request log, so that its line carries the trace id
        app.asgi_handler = tracing.wrap(app.asgi_handler)
    return app


def __getattr__(name: str) -> Any:
    """Build ``app`` on first access, so importing this module has no side effects.

    ``uvicorn app.main:app`` and ``litestar --app app.main:app`` both resolve it this way.
    """
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
