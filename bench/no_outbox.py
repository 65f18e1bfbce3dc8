"""The service with its mails switched off: the baseline of ``bench/run.py --outbox``.

Every ``add_mail`` becomes a no-op before the services import it, so a registration or a
reset request does all its work except writing the outbox row. Never run this for real.
"""

from __future__ import annotations

from typing import Any

import app.jobs.outbox as _outbox


def _no_mail(_session: Any, _kind: str, _recipient: str, **_params: Any) -> None:
    """Write nothing."""


_outbox.add_mail = _no_mail  # type: ignore[assignment]

from app.main import app  # noqa: E402 - after the patch, which the services must see

__all__ = ["app"]
