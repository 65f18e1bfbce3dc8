"""Dependencies point down: the mechanisms import no domain package.

``app/security``, the database, cache, config, error, HTTP, input, log and rate-limit modules
(and the mail and storage adapters) hold mechanisms; a domain (users, auth, contacts...) hands
them what they need, for instance the current-user loader given to the auth middleware. Every
import is read from the source with :mod:`ast`, wherever it stands: at the top, inside a
function, under ``TYPE_CHECKING``, or as ``importlib.import_module("...")``.

Run alone to see the direction: ``uv run pytest tests/unit/test_import_direction.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"

#: The mechanism modules and packages, relative to ``app/``.
MECHANISMS = (
    "security",
    "db.py",
    "cache.py",
    "config.py",
    "errors.py",
    "http.py",
    "input.py",
    "logs.py",
    "ratelimit.py",
    "mail",
    "storage",
    "audit.py",
)

#: The packages of the domains, and the modules that wire them together.
DOMAINS = (
    "app.users",
    "app.auth",
    "app.contacts",
    "app.export",
    "app.dav",
    "app.admin",
    "app.health",
    "app.models",
    "app.main",
)


def mechanism_files() -> list[Path]:
    """Every Python file of :data:`MECHANISMS`."""
    files: list[Path] = []
    for name in MECHANISMS:
        path = APP / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def module_name(path: Path) -> str:
    """The dotted name of a file under ``app/`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, anywhere in it, by absolute dotted name.

    Args:
        source: Python source code.
        module: The dotted name of the module it belongs to (to resolve relative imports).
        is_package: Whether that module is a package's ``__init__``.

    Returns:
        The imported modules; ``from a import b`` counts as ``a`` and ``a.b`` (``b`` may be a module).
    """
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def domain_imports(path: Path) -> list[str]:
    """The domain modules the file at ``path`` imports, sorted."""
    found = imported_modules(path.read_text(), module_name(path), is_package=path.name == "__init__.py")
    return sorted(name for name in found if any(name == d or name.startswith(d + ".") for d in DOMAINS))


@pytest.mark.parametrize("path", mechanism_files(), ids=lambda path: str(path.relative_to(APP.parent)))
def test_a_mechanism_imports_no_domain(path: Path) -> None:
    assert domain_imports(path) == [], f"{path.relative_to(APP.parent)} imports a domain package"


def test_every_mechanism_is_found() -> None:
    files = {str(path.relative_to(APP)) for path in mechanism_files()}
    assert {"security/auth.py", "security/tokens.py", "db.py", "cache.py", "ratelimit.py"} <= files
    assert all(path.is_file() for path in mechanism_files())


@pytest.mark.parametrize(
    "source",
    [
        "from app.users.models import User",
        "import app.contacts.service",
        "from app import users",
        "from app.auth import service as auth_service",
        "if TYPE_CHECKING:\n    from app.users.schemas import CurrentUser",
        "def load():\n    from app.users import current\n    return current",
        "class A:\n    def f(self):\n        import app.admin",
        "from ..users.models import User",
        "import importlib\nimportlib.import_module('app.contacts.controller')",
    ],
)
def test_every_form_of_import_is_seen(source: str) -> None:
    found = imported_modules(source, "app.security.auth")
    assert any(name.startswith(DOMAINS) for name in found), found


def test_mechanism_imports_are_not_mistaken_for_domains() -> None:
    source = "from app import cache\nfrom app.security.tokens import Purpose\nimport app.usersettings"
    found = imported_modules(source, "app.security.auth")
    assert not [name for name in found if any(name == d or name.startswith(d + ".") for d in DOMAINS)]
