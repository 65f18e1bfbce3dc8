"""The generated documentation pages cover everything they claim to (without building Sphinx).

``docs/_ext/generate.py`` writes the configuration page, the HTTP reference and the module
list at build time; these tests run its functions directly, so a gap shows up in the normal
test run and not only in the docs build.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "_ext" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_is_on_the_configuration_page(generate: ModuleType) -> None:
    page = generate.render_settings()
    names = [f.name for f in msgspec.structs.fields(Settings)]
    documented = re.findall(r"^\.\. envvar:: (\w+)$", page, flags=re.MULTILINE)
    assert documented == [name.upper() for name in names]
    # The comment above the field is the text of the entry.
    assert "Lifetime of access tokens, in minutes." in page
    assert "*Default:* ``15``" in page


def test_a_setting_without_a_comment_fails_the_build(generate: ModuleType) -> None:
    source = (ROOT / "app" / "config.py").read_text(encoding="utf-8")
    broken = source.replace("    #: Lifetime of access tokens, in minutes.\n", "", 1)
    assert broken != source
    with pytest.raises(RuntimeError, match="access_token_minutes"):
        generate.settings_fields(broken)


def test_every_operation_is_in_the_http_reference(generate: ModuleType) -> None:
    schema, public = generate.export_openapi()
    page = generate.render_http(schema, public)
    operations = [
        (method, path)
        for path, item in schema["paths"].items()
        for method in item
        if method in generate.METHODS
    ]
    assert len(operations) > 20
    for method, path in operations:
        assert f"{method.upper()} {path}\n" in page, (method, path)
    for name in schema["components"]["schemas"]:
        assert f".. _{generate._schema_anchor(name)}:" in page

    # Login needs no token, the contacts do.
    def section(title: str) -> str:
        start = page.index(f"{title}\n~")
        return page[start : page.index(".. _op-", start)]

    assert "*Authentication:* none" in section("POST /api/auth/login")
    assert "*Authentication:* Bearer access token" in section("GET /api/contacts")


def test_every_public_module_gets_a_page(generate: ModuleType) -> None:
    modules = generate.public_modules()
    files = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "app").rglob("*.py")
    }
    assert modules == sorted(m for m in files if not any(part.startswith("_") for part in m.split(".")))
    pages = generate.render_modules(modules)
    assert pages["modules/app.config"].count(".. automodule:: app.config") == 1


@pytest.mark.parametrize(
    ("markdown", "rest"),
    [
        ("A browser (`Accept: text/html`) gets", "A browser (``Accept: text/html``) gets"),
        ("x`code`s", "x\\ ``code``\\ s"),
        ("**Authorize** then *go*_", "**Authorize** then \\*go\\*\\_"),
        ("", ""),
    ],
)
def test_markdown_descriptions_become_safe_rest(generate: ModuleType, markdown: str, rest: str) -> None:
    assert generate.markdown_to_rst(markdown) == rest
