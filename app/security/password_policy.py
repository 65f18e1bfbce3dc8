"""What a new password must be: 8 to 128 characters and not one of the most common ones.

The length rule is also declared on the request schemas (so it shows in OpenAPI);
:func:`password_problem` is the one place that checks everything.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

#: Fewest characters in a password.
MIN_LENGTH = 8
#: Most characters in a password (compared in full: no bcrypt truncation).
MAX_LENGTH = 128

_COMMON_FILE = Path(__file__).with_name("common_passwords.txt")


@cache
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords, lower-cased."""
    lines = _COMMON_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be used, or ``None`` when it can.

    Args:
        password: The proposed password.

    Returns:
        A message for the user, or ``None``.
    """
    if len(password) < MIN_LENGTH:
        return f"Password must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"Password must be at most {MAX_LENGTH} characters"
    if password.lower() in common_passwords():
        return "Password is too common; choose another one"
    return None
