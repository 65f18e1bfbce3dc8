"""Test helpers: read the outbox of a test's database from the test's own loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from app.db import make_db_config
from app.jobs.models import OutboxMail

if TYPE_CHECKING:
    from app.config import Settings


async def outbox_rows(settings: Settings) -> list[OutboxMail]:
    """Every outbox row, oldest first (a short-lived engine of its own)."""
    config = make_db_config(settings)
    try:
        async with config.get_session() as session:
            return list(
                await session.scalars(select(OutboxMail).order_by(OutboxMail.created_at, OutboxMail.id))
            )
    finally:
        await config.get_engine().dispose()


async def wait_for_rows(
    settings: Settings, done: Callable[[list[OutboxMail]], bool], timeout: float = 10.0
) -> list[OutboxMail]:
    """Poll the outbox until ``done(rows)``; fail with the rows seen after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await outbox_rows(settings)
        if done(rows):
            return rows
        if asyncio.get_running_loop().time() > deadline:
            msg = f"outbox never reached the expected state: {[(r.kind, r.status, r.attempts) for r in rows]}"
            raise AssertionError(msg)
        await asyncio.sleep(0.05)
