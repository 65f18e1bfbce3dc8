"""Typed settings, read once from the environment (and a local ``.env`` file).

Nothing else in the application reads the environment: everything it needs is a field
of :class:`Settings`. Each field's environment variable is its name in upper case.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from dotenv import dotenv_values

logger = logging.getLogger(__name__)

SmtpTls = Literal["none", "starttls", "ssl"]
Environment = Literal["development", "production", "test"]


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of the service, with the embedded defaults.

    The documentation's configuration page is generated from the field comments below
    (``docs/conf.py`` reads them), so keep one ``#:`` line per field.
    """

    #: ``development``, ``test`` or ``production``; production refuses a missing ``SECRET_KEY``.
    app_env: Environment = "development"
    #: SQLAlchemy URL of the database (``postgresql+asyncpg://...`` for PostgreSQL).
    database_url: str = "sqlite+aiosqlite:///./contacts.db"
    #: Connections per worker in each of its two pools, one for reads and one for writes
    #: (PostgreSQL); one event loop rarely needs more.
    db_pool_size: int = 20
    #: Extra connections beyond the pool under bursts (PostgreSQL); each is closed after use.
    db_max_overflow: int = 0
    #: Redis URL for the shared store; unset keeps an in-memory store (one process only, so
    #: refused with ``APP_ENV=production`` or ``WORKERS`` > 1).
    redis_url: str | None = None
    #: Key that signs JWTs; generated once into ``SECRET_KEY_FILE`` when unset outside production.
    secret_key: str = ""
    #: Where a generated development secret key is kept.
    secret_key_file: str = ".secret_key"  # noqa: S105 - a file name
    #: Lifetime of access tokens, in minutes.
    access_token_minutes: int = 15
    #: Lifetime of refresh tokens, in days.
    refresh_token_days: int = 7
    #: Absolute lifetime of a session (a login), in days: no refresh extends it past this.
    session_max_days: int = 30
    #: Lifetime of email confirmation links, in hours.
    confirm_token_hours: int = 24
    #: Lifetime of password reset links, in minutes (at most 60).
    reset_token_minutes: int = 30
    #: Lifetime of email change links, in hours (at most 24).
    email_change_token_hours: int = 24
    #: bcrypt cost factor for password hashes.
    bcrypt_rounds: int = 12
    #: How long a cached user snapshot lives in the store, in seconds.
    user_cache_ttl: int = 300
    #: How long a process also keeps a snapshot in its own memory, in seconds (0: never). With
    #: Redis, changes reach every process at once over pub/sub; this only bounds a missed message.
    user_cache_local_ttl: float = 5.0
    #: Base URL the links in mails are built from.
    public_base_url: str = "http://127.0.0.1:8000"
    #: SMTP server host; unset writes mails to the log instead of sending them.
    smtp_host: str | None = None
    #: SMTP server port.
    smtp_port: int = 587
    #: SMTP user name (optional).
    smtp_username: str | None = None
    #: SMTP password (optional).
    smtp_password: str | None = None
    #: SMTP transport security: ``none``, ``starttls`` or ``ssl``.
    smtp_tls: SmtpTls = "starttls"
    #: Sender address of every mail.
    mail_from: str = "Contacts API <no-reply@contacts.local>"
    #: Hours a mail keeps being retried before it is marked dead (``jobs status`` shows it).
    mail_retry_hours: float = 24.0
    #: Delay before the first retry of a failed mail, in seconds; doubled (with jitter) for each next one.
    mail_retry_seconds: float = 2.0
    #: Run the job runner (mail outbox, housekeeping) inside each app process; ``false`` on API
    #: replicas when a separate ``litestar jobs worker`` delivers.
    jobs_in_process: bool = True
    #: Seconds between two looks at the outbox when nothing woke the runner.
    jobs_poll_seconds: float = 1.0
    #: Seconds a stopping runner waits for the deliveries in flight.
    jobs_shutdown_seconds: float = 10.0
    #: Cloudinary URL (``cloudinary://key:secret@cloud``); unset stores avatars under ``MEDIA_DIR``.
    cloudinary_url: str | None = None
    #: Directory for locally stored avatars, served at ``/media``.
    media_dir: str = "./media"
    #: Where avatars go: ``local`` (``MEDIA_DIR``), ``cloudinary`` or ``s3`` (an S3-compatible bucket,
    #: shared by every replica); unset: Cloudinary when ``CLOUDINARY_URL`` is set, else local.
    avatar_storage: Literal["local", "cloudinary", "s3"] | None = None
    #: S3 endpoint (``https://minio.example:9000``...); unset: AWS S3 in ``S3_REGION``.
    s3_endpoint_url: str | None = None
    #: Bucket of the avatars (``AVATAR_STORAGE=s3``); its ``avatars/`` objects must be publicly readable.
    s3_bucket: str | None = None
    #: S3 access key id; unset: the ``AWS_*`` environment variables or the instance's role.
    s3_access_key_id: str | None = None
    #: S3 secret access key (with ``S3_ACCESS_KEY_ID``).
    s3_secret_access_key: str | None = None
    #: S3 region.
    s3_region: str = "us-east-1"
    #: Base URL clients read avatars from (a CDN...); unset: the endpoint's ``/<bucket>`` URL.
    s3_public_url: str | None = None
    #: Largest accepted avatar upload, in bytes.
    avatar_max_bytes: int = 5 * 1024 * 1024
    #: Largest accepted avatar, in pixels (width x height), against decompression bombs.
    avatar_max_pixels: int = 40_000_000
    #: Largest accepted JSON request body, in bytes.
    max_request_bytes: int = 1024 * 1024
    #: Largest accepted contacts import file, in bytes: a phone's export of
    #: :attr:`import_max_cards` contacts with addresses takes about 2.3 MB.
    import_max_bytes: int = 8 * 1024 * 1024
    #: Most contacts (vCards or CSV rows) one import may bring; a file with more is a ``413``.
    import_max_cards: int = 10_000
    #: Whether rate limits apply (benchmarks turn them off).
    rate_limit_enabled: bool = True
    #: Requests per minute per client to ``/api/users/me``.
    rate_limit_me_per_minute: int = 120
    #: Requests per minute per client to the routes that check or hash a password or send account
    #: mail (login, register, request_email, update_password, reset confirm, password change); the
    #: password change is also counted per user at this rate. App password checks on ``/dav/`` that
    #: no cached verification answers are counted per client at this rate too, on their own counter.
    rate_limit_auth_per_minute: int = 10
    #: Contact imports per minute per user.
    rate_limit_import_per_minute: int = 5
    #: Data exports (``GET /api/users/me/export``) per hour per user.
    rate_limit_export_per_hour: int = 5
    #: Comma-separated proxy addresses whose ``X-Forwarded-For`` is trusted to name the client.
    trusted_proxies: tuple[str, ...] = ()
    #: Comma-separated origins allowed by CORS; empty disables CORS.
    cors_origins: tuple[str, ...] = ()
    #: Apply pending migrations at start-up (safe with several replicas).
    auto_migrate: bool = True
    #: Region used to read phone numbers written without a country code (ISO 3166 alpha-2).
    default_phone_region: str = "UA"
    #: Time zone that decides what "today" is for birthdays.
    timezone: str = "UTC"
    #: Seconds the health check waits for the database.
    health_timeout: float = 2.0
    #: Seconds between ``SIGTERM`` and the server closing its socket, while ``/readyz`` answers
    #: ``503`` so that load balancers stop sending requests (Kubernetes: a few probe periods).
    shutdown_delay: float = 0.0
    #: Seconds the server then waits for requests in flight before cancelling them.
    shutdown_timeout: float = 20.0
    #: Serve Prometheus metrics at ``/metrics`` (off: the route does not exist).
    metrics_enabled: bool = False
    #: Bearer token a scraper must send to ``/metrics``; required in production when metrics are on.
    metrics_token: str = ""
    #: Directory where worker processes share their metrics (``WORKERS>1``); ``python -m app``
    #: makes a temporary one when unset.
    prometheus_multiproc_dir: str | None = None
    #: OTLP/HTTP collector base URL (``http://otel-collector:4318``): set, requests are traced
    #: (needs the ``otel`` extra); spans go to its ``/v1/traces``. Unset: no tracing.
    otel_exporter_otlp_endpoint: str | None = None
    #: The ``service.name`` of the spans.
    otel_service_name: str = "contacts-api"
    #: Share of requests traced (0 to 1) when the caller sent no ``traceparent``; a caller's
    #: decision is always followed (the ``parentbased_traceidratio`` sampler's argument).
    otel_traces_sampler_arg: float = 1.0
    #: Log level of the application loggers.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``json`` (one object per line, for log collectors) or ``console`` (readable, for development).
    log_format: Literal["json", "console"] = "json"
    #: Address ``python -m app`` listens on (``0.0.0.0`` in the container).
    host: str = "127.0.0.1"
    #: Port ``python -m app`` listens on.
    port: int = 8000
    #: Worker processes of ``python -m app``.
    workers: int = 1
    #: Most header fields a request may carry; more is refused with ``431``.
    max_request_headers: int = 100
    #: Largest request line plus headers, in bytes; larger is refused with ``431``.
    max_request_head_bytes: int = 32 * 1024
    #: Maximum examples per operation in the schema fuzzing test.
    fuzz_examples: int = 20

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite (the embedded default)."""
        return self.database_url.startswith("sqlite")

    @property
    def tz(self) -> ZoneInfo:
        """The configured time zone as a :class:`~zoneinfo.ZoneInfo`."""
        return ZoneInfo(self.timezone)


_LIST_FIELDS = {"trusted_proxies", "cors_origins"}


def _env_name(field: str) -> str:
    return field.upper()


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Build :class:`Settings` from the environment, with ``env_file`` filling the gaps.

    Args:
        environ: The variables to read; defaults to :data:`os.environ`.
        env_file: A dotenv file whose values apply where ``environ`` has none; ``None`` skips it.

    Returns:
        The validated settings.

    Raises:
        SettingsError: A variable has a bad value; the message names it.
    """
    source: dict[str, Any] = {}
    if env_file is not None and Path(env_file).is_file():
        source.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    source.update(os.environ if environ is None else environ)

    raw: dict[str, Any] = {}
    for field in msgspec.structs.fields(Settings):
        value = source.get(_env_name(field.name))
        if value is None:
            continue
        value = value.strip()
        if field.name in _LIST_FIELDS:
            raw[field.name] = tuple(part.strip() for part in value.split(",") if part.strip())
        elif value == "" and field.default is None:
            raw[field.name] = None
        else:
            raw[field.name] = value
        try:
            msgspec.convert({field.name: raw[field.name]}, _single_field(field.name), strict=False)
        except msgspec.ValidationError as exc:
            reason = str(exc).split(" - at ")[0]
            msg = f"{_env_name(field.name)}: {reason} (got {value!r})"
            raise SettingsError(msg) from None
    settings = msgspec.convert(raw, Settings, strict=False)
    _check(settings)
    return _with_secret_key(settings)


@cache
def _single_field(name: str) -> type[msgspec.Struct]:
    """A one-field Struct used to validate (and name) a single variable."""
    field = next(f for f in msgspec.structs.fields(Settings) if f.name == name)
    return msgspec.defstruct(f"_{name}", [(name, field.type)], kw_only=True)


def _check(settings: Settings) -> None:
    """Cross-field and range checks msgspec's types cannot express."""
    positive = (
        "access_token_minutes",
        "refresh_token_days",
        "confirm_token_hours",
        "reset_token_minutes",
        "email_change_token_hours",
        "user_cache_ttl",
        "avatar_max_bytes",
        "avatar_max_pixels",
        "max_request_bytes",
        "import_max_bytes",
        "import_max_cards",
        "db_pool_size",
        "rate_limit_me_per_minute",
        "rate_limit_auth_per_minute",
        "rate_limit_import_per_minute",
        "rate_limit_export_per_hour",
        "session_max_days",
        "fuzz_examples",
        "mail_retry_hours",
        "jobs_poll_seconds",
        "jobs_shutdown_seconds",
        "port",
        "workers",
        "max_request_headers",
        "max_request_head_bytes",
    )
    for name in positive:
        if getattr(settings, name) <= 0:
            msg = f"{_env_name(name)}: must be a positive number (got {getattr(settings, name)!r})"
            raise SettingsError(msg)
    for name in ("mail_retry_seconds", "user_cache_local_ttl", "shutdown_delay", "shutdown_timeout"):
        if getattr(settings, name) < 0:
            msg = f"{_env_name(name)}: must not be negative (got {getattr(settings, name)})"
            raise SettingsError(msg)
    if not 0 <= settings.otel_traces_sampler_arg <= 1:
        msg = f"OTEL_TRACES_SAMPLER_ARG: must be between 0 and 1 (got {settings.otel_traces_sampler_arg})"
        raise SettingsError(msg)
    if settings.reset_token_minutes > 60:
        msg = f"RESET_TOKEN_MINUTES: must be at most 60 (got {settings.reset_token_minutes})"
        raise SettingsError(msg)
    if settings.email_change_token_hours > 24:
        msg = f"EMAIL_CHANGE_TOKEN_HOURS: must be at most 24 (got {settings.email_change_token_hours})"
        raise SettingsError(msg)
    if not 4 <= settings.bcrypt_rounds <= 16:
        msg = f"BCRYPT_ROUNDS: must be between 4 and 16 (got {settings.bcrypt_rounds})"
        raise SettingsError(msg)
    if not settings.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        msg = "DATABASE_URL: must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
        raise SettingsError(msg)
    if settings.redis_url is not None and not settings.redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        msg = "REDIS_URL: must start with redis://, rediss:// or unix://"
        raise SettingsError(msg)
    # Sessions, rate limits and the cached user live in the store: processes that do not share
    # one disagree about a logout or a demotion.
    if settings.redis_url is None and settings.app_env == "production":
        msg = "REDIS_URL: required when APP_ENV=production (replicas must share one store)"
        raise SettingsError(msg)
    if settings.redis_url is None and settings.workers > 1:
        msg = (
            f"REDIS_URL: required when WORKERS > 1 (got {settings.workers}; the memory store is per process)"
        )
        raise SettingsError(msg)
    if not settings.public_base_url.startswith(("http://", "https://")):
        msg = f"PUBLIC_BASE_URL: must start with http:// or https:// (got {settings.public_base_url!r})"
        raise SettingsError(msg)
    if settings.cloudinary_url is not None and not settings.cloudinary_url.startswith("cloudinary://"):
        msg = "CLOUDINARY_URL: must start with cloudinary://"
        raise SettingsError(msg)
    if settings.metrics_enabled and settings.app_env == "production" and len(settings.metrics_token) < 16:
        msg = "METRICS_TOKEN: at least 16 characters are required when METRICS_ENABLED=true in production"
        raise SettingsError(msg)
    if settings.avatar_storage == "s3" and not settings.s3_bucket:
        msg = "S3_BUCKET: required when AVATAR_STORAGE=s3"
        raise SettingsError(msg)
    if settings.avatar_storage == "cloudinary" and not settings.cloudinary_url:
        msg = "CLOUDINARY_URL: required when AVATAR_STORAGE=cloudinary"
        raise SettingsError(msg)
    for name in ("s3_endpoint_url", "s3_public_url", "otel_exporter_otlp_endpoint"):
        value = getattr(settings, name)
        if value is not None and not value.startswith(("http://", "https://")):
            msg = f"{_env_name(name)}: must start with http:// or https:// (got {value!r})"
            raise SettingsError(msg)
    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"TIMEZONE: unknown time zone {settings.timezone!r}"
        raise SettingsError(msg) from None
    import phonenumbers  # local: only the check needs it at start-up

    if settings.default_phone_region not in phonenumbers.SUPPORTED_REGIONS:
        msg = f"DEFAULT_PHONE_REGION: unknown region {settings.default_phone_region!r}"
        raise SettingsError(msg)


def _with_secret_key(settings: Settings) -> Settings:
    """Return settings with a secret key, generating a development one when allowed."""
    if settings.secret_key:
        if len(settings.secret_key) < 32:
            msg = "SECRET_KEY: must be at least 32 characters"
            raise SettingsError(msg)
        return settings
    if settings.app_env == "production":
        msg = "SECRET_KEY: required when APP_ENV=production"
        raise SettingsError(msg)
    path = Path(settings.secret_key_file)
    if path.is_file():
        key = path.read_text().strip()
    else:
        key = secrets.token_urlsafe(48)
        # Created 0600 from the start: a write then chmod leaves the key readable in between.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(key)
        logger.warning("SECRET_KEY is not set: generated one into %s (set SECRET_KEY in production)", path)
    return msgspec.structs.replace(settings, secret_key=key)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use.

    Returns:
        The settings of this process.
    """
    return load_settings()
