"""``litestar users ...``: make admins from the command line (admins never register).

* ``litestar users create-admin`` prompts for the email, the username and the password (twice);
  ``--email``/``--username`` and the ``ADMIN_PASSWORD`` environment variable make it
  non-interactive for automation.
* ``litestar users promote EMAIL`` makes an existing user an admin.

Each command opens its own engine and store from the app's settings (the CLI runs in its own
process, outside the app's lifespan) and drops the changed user's cached snapshot, so a
running service sees the change on that user's next request. The cache drop is best effort:
an unreachable store is reported, and the entry expires on its own within ``USER_CACHE_TTL``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click
from advanced_alchemy.exceptions import NotFoundError
from litestar.cli._utils import LitestarGroup
from litestar.plugins import CLIPluginProtocol

from app import cache
from app.db import make_db_config
from app.input import normalize_email, normalize_username
from app.security.password_policy import password_problem
from app.users.service import UserExistsError, UserService

if TYPE_CHECKING:
    from litestar import Litestar

    from app.config import Settings


def _check_password(password: str) -> None:
    # The same policy as registration: an admin's password is no weaker than a user's.
    if problem := password_problem(password):
        raise click.BadParameter(problem, param_hint="password")


def _check_email(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    # The API's rule (app.input.normalize_email), so the CLI accepts exactly what the API does.
    try:
        return normalize_email(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an email address: {exc}") from None


def _check_username(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return normalize_username(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


async def _with_service(settings: Settings, action: str, **kwargs: str) -> str:
    """Run one service call on a fresh engine and store, and describe the outcome."""
    db_config = make_db_config(settings)
    root = cache.make_root_store(settings)
    try:
        async with root, db_config.get_session() as session:  # leaving the root store closes Redis
            store = cache.user_cache(root, settings)  # its deletes reach the servers' copies
            service = UserService(session, user_cache=store, bcrypt_rounds=settings.bcrypt_rounds)
            if action == "create":
                user = await service.create_admin(**kwargs)
                return f"Created admin {user.email} ({user.id})"
            user, changed = await service.promote(kwargs["email"])
            if not changed:
                return f"{user.email} is already an admin"
            return f"Promoted {user.email} to admin"
    finally:
        await db_config.get_engine().dispose()


def _run(app: Litestar, action: str, **kwargs: str) -> None:
    try:
        message = asyncio.run(_with_service(app.state.settings, action, **kwargs))
    except UserExistsError as exc:
        raise click.ClickException(f"The {exc.field} is already taken (use `users promote EMAIL`?)") from None
    except NotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(message)


@click.group(cls=LitestarGroup, name="users")
def users_group() -> None:
    """Manage users: create admins, promote users."""


@users_group.command(name="create-admin")
@click.option("--email", prompt=True, callback=_check_email, help="The admin's email address.")
@click.option("--username", prompt=True, callback=_check_username, help="The admin's username.")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="ADMIN_PASSWORD",
    show_envvar=True,
    help="The password (8-128 characters); prompted twice unless ADMIN_PASSWORD is set.",
)
def create_admin(app: Litestar, email: str, username: str, password: str) -> None:
    """Create a confirmed admin account."""
    _check_password(password)
    _run(app, "create", email=email, username=username, password=password)


@users_group.command(name="promote")
@click.argument("email", callback=_check_email)
def promote(app: Litestar, email: str) -> None:
    """Give the user with EMAIL the admin role."""
    _run(app, "promote", email=email)


class UsersCLIPlugin(CLIPluginProtocol):
    """Adds the ``users`` group to the Litestar CLI (registered in ``create_app``)."""

    def on_cli_init(self, cli: click.Group) -> None:
        """Register the group.

        Args:
            cli: Litestar's root command group.
        """
        cli.add_command(users_group)
