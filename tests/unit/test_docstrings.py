"""Docstring coverage of ``app/``: the module reference is built from the docstrings.

ruff's ``D`` rules check the docstrings' form (Google convention); this test checks that at
least :data:`THRESHOLD` of the public modules, classes, functions and methods have one, and
names the ones that don't.
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
THRESHOLD = 0.95


def _public(name: str) -> bool:
    return not name.startswith("_")


def docstring_report(source: str, module: str) -> tuple[int, list[str]]:
    """Count the public definitions of a module and list those without a docstring.

    Public: the module itself, classes and functions whose name has no leading underscore,
    and the methods of public classes (magic methods such as ``__init__`` are described by
    their class). Functions nested in functions are implementation details and not counted.

    Returns:
        The number of public definitions and the dotted names of the undocumented ones.
    """
    tree = ast.parse(source)
    total = 1
    missing = [] if ast.get_docstring(tree) else [module]

    def visit(body: list[ast.stmt], prefix: str) -> None:
        nonlocal total
        for node in body:
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if not _public(node.name):
                continue
            total += 1
            name = f"{prefix}.{node.name}"
            if not ast.get_docstring(node):
                missing.append(name)
            if isinstance(node, ast.ClassDef):
                visit(node.body, name)

    visit(tree.body, module)
    return total, missing


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_app_docstring_coverage() -> None:
    total = 0
    missing: list[str] = []
    for path in sorted(APP.rglob("*.py")):
        module = _module_name(path)
        if not all(_public(part) for part in module.split(".")):
            continue
        count, undocumented = docstring_report(path.read_text(encoding="utf-8"), module)
        total += count
        missing += undocumented
    coverage = 1 - len(missing) / total
    assert total > 50, "the walk found too few definitions: is APP right?"
    assert coverage >= THRESHOLD, (
        f"docstring coverage of app/ is {coverage:.1%} (< {THRESHOLD:.0%}); undocumented: {', '.join(missing)}"
    )


def test_report_counts_what_the_reference_shows() -> None:
    source = '''
"""Module."""
class Documented:
    """Yes."""
    def method(self): ...
    def _private(self): ...
    def __init__(self): ...
class _Hidden:
    def method(self): ...
def function():
    def nested(): ...
async def documented_async():
    """Yes."""
'''
    total, missing = docstring_report(source, "m")
    assert total == 5
    assert missing == ["m.Documented.method", "m.function"]
    assert docstring_report("x = 1\n", "bare") == (1, ["bare"])
