"""Password hashing (bcrypt over a SHA-256 prehash) and the password policy."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from app.security.password_policy import MAX_LENGTH, MIN_LENGTH, common_passwords, password_problem
from app.security.passwords import hash_password, hash_password_sync, verify_password, verify_password_sync


async def test_hash_and_verify() -> None:
    hashed = await hash_password("a fine passphrase", 4)

    assert hashed.startswith("$2b$04$")
    assert "a fine passphrase" not in hashed
    assert await verify_password("a fine passphrase", hashed)
    assert not await verify_password("a fine passphrasE", hashed)


def test_salted_hashes_differ() -> None:
    assert hash_password_sync("same password", 4) != hash_password_sync("same password", 4)


def test_passwords_differing_after_byte_72_are_different() -> None:
    base = "x" * 72
    hashed = hash_password_sync(base + "A", 4)

    assert verify_password_sync(base + "A", hashed)
    assert not verify_password_sync(base + "B", hashed)
    assert not verify_password_sync(base, hashed)


def test_unicode_passwords_work() -> None:
    hashed = hash_password_sync("пароль-довгий-🙂", 4)
    assert verify_password_sync("пароль-довгий-🙂", hashed)


@pytest.mark.parametrize("broken", ["", "not a hash", "$2b$04$short"])
def test_a_broken_hash_never_verifies(broken: str) -> None:
    assert verify_password_sync("anything", broken) is False


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("a" * (MIN_LENGTH - 1), "at least"),
        ("a" * (MAX_LENGTH + 1), "at most"),
        ("password123", "too common"),
        ("PassWord123", "too common"),
        ("qwertyuiop", "too common"),
        ("12345678", "too common"),
    ],
)
def test_policy_refuses(password: str, problem: str) -> None:
    message = password_problem(password)
    assert message is not None
    assert problem in message


@pytest.mark.parametrize("password", ["k7#Lm2pQ", "b" * MAX_LENGTH, "correct horse battery staple"])
def test_policy_accepts(password: str) -> None:
    assert password_problem(password) is None


def test_the_bundled_list_is_loaded_lower_cased_without_comments() -> None:
    words = common_passwords()

    assert len(words) >= 3000  # ASVS 6.2.4: the top 3,000 passwords that the length rule allows
    assert "password" in words
    assert all(word == word.lower() and not word.startswith("#") for word in words)


async def test_hashing_runs_in_a_bounded_number_of_threads(monkeypatch):
    """Concurrent logins queue for the hashing threads instead of starving the event loop."""
    import asyncio
    import threading
    import time

    from app.security import passwords

    active = peak = 0
    lock = threading.Lock()

    def slow_verify(_password: str, _hash: str) -> bool:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return True

    monkeypatch.setattr(passwords, "verify_password_sync", slow_verify)
    await asyncio.gather(*(passwords.verify_password("x", "y") for _ in range(8)))
    assert peak == passwords.HASHING_THREADS


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux-only")
async def test_hashing_runs_at_a_lower_priority_than_the_event_loop(monkeypatch):
    """On Linux the kernel prefers the event loop (and every other request) over bcrypt."""
    from app.security import passwords

    seen: list[int] = []

    def recording_verify(_password: str, _hash: str) -> bool:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return True

    loop_priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    monkeypatch.setattr(passwords, "verify_password_sync", recording_verify)

    assert await passwords.verify_password("x", "y")
    assert seen == [passwords.HASHING_NICENESS]
    # Only the hashing thread was reniced, not the thread running the event loop.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_priority


async def test_hashing_still_works_when_the_os_refuses_the_lower_priority(monkeypatch):
    """A refused ``setpriority`` (seccomp, a locked-down container) must not break logins."""
    from app.security import passwords

    def refuse(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    monkeypatch.setattr(passwords, "_executor", None)  # fresh threads, so the refusal is hit
    try:
        hashed = await passwords.hash_password("a fine passphrase", 4)
        assert await passwords.verify_password("a fine passphrase", hashed)
        assert not await passwords.verify_password("another passphrase", hashed)
    finally:
        if passwords._executor is not None:
            passwords._executor.shutdown()


def test_lowering_the_priority_is_skipped_off_linux(monkeypatch):
    """Elsewhere a thread id passed to setpriority could renice a whole process."""
    from app.security import passwords

    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(os, "setpriority", lambda *args: calls.append(args), raising=False)

    passwords.lower_thread_priority()

    assert calls == []
