"""Password hashing with bcrypt, off the event loop.

bcrypt reads at most 72 bytes, so the password is first reduced to a SHA-256 digest
(base64, 44 bytes): two passwords that differ after byte 72 stay different.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import weakref

import bcrypt
from anyio import CapacityLimiter, to_thread

#: bcrypt runs in at most this many threads at once: logins queue for a core instead of
#: starving the event loop (anyio's default of 40 threads let 40 hashes fight over 2 cores).
HASHING_THREADS = max(1, (os.cpu_count() or 2) - 1)
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = weakref.WeakKeyDictionary()


def _hashing_limiter() -> CapacityLimiter:
    # One limiter per event loop: a limiter is bound to the loop it first waits on.
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = CapacityLimiter(HASHING_THREADS)
    return limiter


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def hash_password_sync(password: str, rounds: int) -> str:
    """Hash ``password`` (blocking).

    Args:
        password: The plain password.
        rounds: The bcrypt cost factor.

    Returns:
        The bcrypt hash, as text.
    """
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode("ascii")


def verify_password_sync(password: str, password_hash: str) -> bool:
    """Check ``password`` against ``password_hash`` (blocking, constant time)."""
    try:
        return bcrypt.checkpw(_prehash(password), password_hash.encode("ascii"))
    except ValueError:
        return False


async def hash_password(password: str, rounds: int) -> str:
    """Hash ``password`` in a worker thread so other requests keep flowing.

    Args:
        password: The plain password.
        rounds: The bcrypt cost factor.

    Returns:
        The bcrypt hash, as text.
    """
    return await to_thread.run_sync(hash_password_sync, password, rounds, limiter=_hashing_limiter())


async def verify_password(password: str, password_hash: str) -> bool:
    """Check ``password`` against ``password_hash`` in a worker thread.

    Args:
        password: The plain password.
        password_hash: A hash made by :func:`hash_password`.

    Returns:
        Whether they match.
    """
    return await to_thread.run_sync(verify_password_sync, password, password_hash, limiter=_hashing_limiter())
