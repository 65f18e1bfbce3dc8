"""Password hashing with bcrypt, off the event loop.

bcrypt reads at most 72 bytes, so the password is first reduced to a SHA-256 digest
(base64, 44 bytes): two passwords that differ after byte 72 stay different.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt
from anyio import CancelScope, CapacityLimiter

_T = TypeVar("_T")

#: bcrypt runs in at most this many threads at once: logins queue for a core instead of
#: starving the event loop (anyio's default of 40 threads let 40 hashes fight over 2 cores).
HASHING_THREADS = max(1, (os.cpu_count() or 2) - 1)
#: Nice value of the hashing threads (0 = normal, 19 = lowest): when the cores are busy the
#: kernel runs the event loop first, so bcrypt delays other logins more than other requests.
#: Not 19: on a busy host that starved logins, and a starved thread holds up the event loop
#: when it waits for the GIL the loop has to hand over.
HASHING_NICENESS = 10
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = weakref.WeakKeyDictionary()
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def lower_thread_priority() -> None:
    """Give the calling thread the nice value :data:`HASHING_NICENESS` where the OS allows it.

    Linux schedules threads separately, so this slows down only the calling thread. Elsewhere
    ``setpriority`` on a thread id would renice the whole process (or some other one) and
    ``threading.get_native_id`` may be missing, so nothing is done; if the OS refuses
    (a seccomp profile, or a value the process may not set) hashing runs at normal priority,
    only less politely, rather than failing logins.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


def _hashing_executor() -> ThreadPoolExecutor:
    # Own threads, not anyio's shared pool: an unprivileged thread cannot lower its nice value
    # again, so a reniced anyio worker would slow down whatever else later runs on it.
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                HASHING_THREADS, thread_name_prefix="bcrypt", initializer=lower_thread_priority
            )
        return _executor


def _hashing_limiter() -> CapacityLimiter:
    # One limiter per event loop: a limiter is bound to the loop it first waits on.
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = CapacityLimiter(HASHING_THREADS)
    return limiter


async def _run_hashing(func: Callable[..., _T], *args: object) -> _T:
    async with _hashing_limiter():
        future = asyncio.get_running_loop().run_in_executor(_hashing_executor(), func, *args)
        # As anyio.to_thread.run_sync does: a cancelled login still waits for its running hash,
        # so the limiter never admits more hashes than there are threads to run them.
        with CancelScope(shield=True):
            return await future


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
    return await _run_hashing(hash_password_sync, password, rounds)


async def verify_password(password: str, password_hash: str) -> bool:
    """Check ``password`` against ``password_hash`` in a worker thread.

    Args:
        password: The plain password.
        password_hash: A hash made by :func:`hash_password`.

    Returns:
        Whether they match.
    """
    return await _run_hashing(verify_password_sync, password, password_hash)
