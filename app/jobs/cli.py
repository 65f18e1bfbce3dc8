"""``litestar jobs ...``: the job runner as a process of its own, and the outbox's state.

* ``litestar --app app.main:app jobs worker`` delivers mails and does the housekeeping until
  SIGTERM/SIGINT; deliveries in flight then finish (``JOBS_SHUTDOWN_SECONDS`` at most) and
  the rest stays for the next runner. Run it beside API replicas started with
  ``JOBS_IN_PROCESS=false``; on PostgreSQL any number of workers may run.
* ``litestar jobs status`` prints the pending and dead mails and the age of the oldest pending one.
* ``litestar jobs retry-dead`` makes every dead mail pending again.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from litestar.cli._utils import LitestarGroup
from litestar.plugins import CLIPluginProtocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from litestar import Litestar

    from app.jobs.runner import JobRunner


def _runner(app: Litestar) -> JobRunner:
    return app.state.job_runner


async def _with_engine(runner: JobRunner, work: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``work`` and close the engine's pool (the CLI runs outside the app's lifespan)."""
    try:
        return await work()
    finally:
        await runner.engine.dispose()


async def _serve(runner: JobRunner) -> None:
    """Run until SIGTERM or SIGINT, then stop the runner gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runner.start()
    click.echo("job runner started (SIGTERM stops it)")
    await stop.wait()
    await runner.stop()
    click.echo("job runner stopped")


def _age(since: datetime | None) -> str:
    if since is None:
        return "-"
    return f"{(datetime.now(UTC) - since).total_seconds():.0f}s"


@click.group(cls=LitestarGroup, name="jobs")
def jobs_group() -> None:
    """The job runner: mail outbox and housekeeping."""


@jobs_group.command(name="worker")
def worker(app: Litestar) -> None:
    """Deliver mails and do the housekeeping until SIGTERM."""
    runner = _runner(app)
    asyncio.run(_with_engine(runner, lambda: _serve(runner)))


@jobs_group.command(name="status")
def status(app: Litestar) -> None:
    """Print the outbox's pending and dead mails, and the oldest pending one's age."""
    runner = _runner(app)
    found = asyncio.run(_with_engine(runner, runner.status))
    click.echo(f"pending: {found.pending}")
    click.echo(f"dead: {found.dead}")
    click.echo(f"delivered (last 7 days): {found.sent}")
    click.echo(f"oldest pending: {_age(found.oldest_pending)}")


@jobs_group.command(name="retry-dead")
def retry_dead(app: Litestar) -> None:
    """Make every dead mail pending again (after fixing what killed it)."""
    runner = _runner(app)
    revived = asyncio.run(_with_engine(runner, runner.retry_dead))
    click.echo(f"{revived} dead mail(s) pending again")


class JobsCLIPlugin(CLIPluginProtocol):
    """Adds the ``jobs`` group to the Litestar CLI (registered in ``create_app``)."""

    def on_cli_init(self, cli: click.Group) -> None:
        """Register the group.

        Args:
            cli: Litestar's root command group.
        """
        cli.add_command(jobs_group)
