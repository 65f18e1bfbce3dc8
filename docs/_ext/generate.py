"""Build-time generated pages: settings, HTTP reference and module reference.

Everything is written into ``docs/_generated`` when the builder starts, before Sphinx reads
the sources, so the pages that ``.. include::`` them are always current. A file is only
rewritten when its content changed, which keeps incremental builds incremental.
"""

from __future__ import annotations

import ast
import inspect
import json
import pkgutil
import re
import tempfile
from pathlib import Path
from typing import Any

import msgspec

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
METHODS = ("get", "put", "post", "patch", "delete", "head", "options")


# --------------------------------------------------------------------------- helpers


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _heading(title: str, char: str) -> str:
    return f"{title}\n{char * len(title)}\n"


def _literal(value: str) -> str:
    """``value`` as an inline literal (reST has no escape inside literals, so avoid backticks)."""
    if not value:
        return '``""``'
    return "``" + value.replace("``", "` `") + "``"


_CODE_SPAN = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
# What may stand right before / after inline markup in reST without a separating space.
_OPENERS = "-:/'\"<([{"
_CLOSERS = "-.,:;!?/'\")]}>"
_ESCAPE = re.compile(r"([\\*_|`<>\[\]])")


def markdown_to_rst(text: str) -> str:
    """Render the small Markdown of OpenAPI descriptions (code spans, bold) as safe reST."""
    segments: list[tuple[bool, str]] = []  # (is markup, reST text)
    pos = 0
    for match in _CODE_SPAN.finditer(text):
        segments += _plain(text[pos : match.start()])
        segments.append((True, _literal(match.group(1))))
        pos = match.end()
    segments += _plain(text[pos:])
    out = ""
    for index, (markup, chunk) in enumerate(segments):
        if markup and out and not (out[-1].isspace() or out[-1] in _OPENERS):
            out += "\\ "  # inline markup must start after a space or punctuation
        out += chunk
        following = segments[index + 1][1] if index + 1 < len(segments) else ""
        if markup and following and not (following[0].isspace() or following[0] in _CLOSERS):
            out += "\\ "  # ... and end before one
    return out


def _plain(text: str) -> list[tuple[bool, str]]:
    segments: list[tuple[bool, str]] = []
    pos = 0
    for match in _STRONG.finditer(text):
        segments.append((False, _ESCAPE.sub(r"\\\1", text[pos : match.start()])))
        segments.append((True, "**" + _ESCAPE.sub(r"\\\1", match.group(1)) + "**"))
        pos = match.end()
    segments.append((False, _ESCAPE.sub(r"\\\1", text[pos:])))
    return [segment for segment in segments if segment[1]]


# --------------------------------------------------------------------------- settings


def settings_fields(source: str | None = None) -> list[dict[str, Any]]:
    """Every field of ``Settings``: name, variable, type, default and its ``#:`` comment.

    Args:
        source: The text of ``app/config.py`` (read from disk when omitted).

    Raises:
        RuntimeError: A field has no ``#:`` comment (the build must fail, not drift).
    """
    from app.config import Settings

    if source is None:
        source = (ROOT / "app" / "config.py").read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    defaults = {f.name: f.default for f in msgspec.structs.fields(Settings)}
    fields = []
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        comment: list[str] = []
        index = node.lineno - 2
        while index >= 0 and lines[index].strip().startswith("#:"):
            comment.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        name = node.target.id
        if not comment:
            msg = f"app/config.py: Settings.{name} has no '#:' comment for the configuration page"
            raise RuntimeError(msg)
        fields.append(
            {
                "name": name,
                "env": name.upper(),
                "type": ast.unparse(node.annotation),
                "default": defaults[name],
                "doc": " ".join(comment),
            }
        )
    missing = set(defaults) - {f["name"] for f in fields}
    if missing:
        msg = f"app/config.py: fields not found in the Settings source: {sorted(missing)}"
        raise RuntimeError(msg)
    return fields


def _default_text(value: Any) -> str:
    if value is None:
        return "*unset*"
    if isinstance(value, bool):
        return _literal(str(value).lower())
    if isinstance(value, tuple):
        return _literal(",".join(value)) if value else "*empty*"
    if value == "":
        return "*empty*"
    return _literal(str(value))


def render_settings() -> str:
    """The configuration reference: one ``envvar`` entry per setting, in the source's order."""
    out = [".. This file is generated from app/config.py by docs/_ext/generate.py; do not edit.", ""]
    for f in settings_fields():
        out += [
            f".. envvar:: {f['env']}",
            "",
            f"   {f['doc']}",
            "",
            f"   *Default:* {_default_text(f['default'])} · *type:* {_literal(f['type'])} · "
            f"*field:* :attr:`~app.config.Settings.{f['name']}`",
            "",
        ]
    return "\n".join(out)


# --------------------------------------------------------------------------- OpenAPI


def build_app() -> Any:
    """An app built with test-like settings (nothing is connected, no file is written)."""
    from app.config import load_settings
    from app.main import create_app

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {
                "APP_ENV": "test",
                "SECRET_KEY": "docs-build-" + "x" * 40,
                "AUTO_MIGRATE": "false",
                "DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/docs.db",
                "MEDIA_DIR": f"{tmp}/media",
                "LOG_LEVEL": "WARNING",
            },
            env_file=None,
        )
        return create_app(settings)


def export_openapi(application: Any = None) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """The OpenAPI document of ``application`` (by default one from :func:`build_app`).

    Returns:
        The schema, and the ``(method, path)`` of the operations that need no token: those
        the handlers say ``exclude_from_auth``.
    """
    from app.openapi_document import tidy_document
    from app.openapi_ui import mark_public_operations, public_operations

    application = application or build_app()
    # The document as a running server serves it: these run at start-up, which is not run here.
    mark_public_operations(application)
    schema = tidy_document(application.openapi_schema).to_schema()
    public = public_operations(application)
    return schema, public


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _schema_anchor(name: str) -> str:
    return "schema-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _operation_anchor(method: str, path: str) -> str:
    return "op-" + method + "-" + re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def schema_type(schema: dict[str, Any]) -> str:
    """A short reST description of a JSON schema (links to named component schemas)."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f":ref:`{name} <{_schema_anchor(name)}>`"
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(schema_type(s) for s in schema[key])
    if "allOf" in schema:
        return " and ".join(schema_type(s) for s in schema["allOf"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(schema_type({**schema, "type": k}) for k in kind)
    if "const" in schema:
        return _literal(json.dumps(schema["const"]))
    if "enum" in schema:
        return "one of " + ", ".join(_literal(json.dumps(v)) for v in schema["enum"])
    if kind == "array":
        return "array of " + schema_type(schema.get("items", {}))
    if kind == "object" and "additionalProperties" in schema and not schema.get("properties"):
        extra = schema["additionalProperties"]
        return "object of " + (schema_type(extra) if isinstance(extra, dict) else "any")
    if kind is None:
        return "any"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def _constraints(schema: dict[str, Any]) -> str:
    words = {
        "minLength": "min length",
        "maxLength": "max length",
        "minimum": "≥",
        "maximum": "≤",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
        "minItems": "min items",
        "maxItems": "max items",
        "pattern": "pattern",
    }
    parts = [f"{label} {_literal(_number(schema[key]))}" for key, label in words.items() if key in schema]
    if "default" in schema:
        parts.append("default " + _literal(json.dumps(schema["default"])))
    return "; ".join(parts)


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _note(description: str) -> str:
    return markdown_to_rst(description.strip().rstrip("."))


def _cell(text: str) -> str:
    """A list-table cell body: one line, never empty."""
    text = " ".join(text.split())
    return text or "\\-"


def _render_schema(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f".. _{_schema_anchor(name)}:", "", _heading(name, "~")]
    if schema.get("description"):
        out += [markdown_to_rst(schema["description"]), ""]
    props: dict[str, Any] = schema.get("properties", {})
    if not props:
        out += [f"Type: {schema_type(schema)}", ""]
        return out
    required = set(schema.get("required", []))
    out += [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 25 35 40",
        "",
        "   * - Field",
        "     - Type",
        "     - Notes",
    ]
    for prop, sub in props.items():
        notes = ["required" if prop in required else "optional"]
        if sub.get("description"):
            notes.append(_note(sub["description"]))
        if _constraints(sub):
            notes.append(_constraints(sub))
        out += [
            f"   * - {_literal(prop)}",
            f"     - {_cell(schema_type(sub))}",
            f"     - {_cell('; '.join(notes))}",
        ]
    out.append("")
    return out


def _render_operation(method: str, path: str, op: dict[str, Any], public: bool) -> list[str]:
    title = f"{method.upper()} {path}"
    out = [f".. _{_operation_anchor(method, path)}:", "", _heading(title, "~")]
    if op.get("summary"):
        out += [f"**{markdown_to_rst(op['summary'])}**", ""]
    if op.get("description"):
        out += [markdown_to_rst(op["description"]), ""]
    facts = ["*Authentication:* " + ("none" if public else "Bearer access token")]
    facts.append(f"*Operation id:* {_literal(op.get('operationId', ''))}")
    if op.get("deprecated"):
        facts.append("**Deprecated**")
    out += [" · ".join(facts), ""]

    params = op.get("parameters", [])
    if params:
        out += [
            ".. rubric:: Parameters",
            "",
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 20 12 28 40",
            "",
            "   * - Name",
            "     - In",
            "     - Type",
            "     - Notes",
        ]
        for p in params:
            sub = p.get("schema", {})
            notes = ["required" if p.get("required") else "optional"]
            if p.get("description"):
                notes.append(_note(p["description"]))
            if _constraints(sub):
                notes.append(_constraints(sub))
            out += [
                f"   * - {_literal(p['name'])}",
                f"     - {p.get('in', '')}",
                f"     - {_cell(schema_type(sub))}",
                f"     - {_cell('; '.join(notes))}",
            ]
        out.append("")

    body = op.get("requestBody")
    if body:
        out += [".. rubric:: Request body" + (" (required)" if body.get("required") else ""), ""]
        for media, content in body.get("content", {}).items():
            out.append(f"* {_literal(media)}: {schema_type(content.get('schema', {}))}")
        out.append("")

    responses = op.get("responses", {})
    if responses:
        out += [
            ".. rubric:: Responses",
            "",
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 10 50 40",
            "",
            "   * - Status",
            "     - Meaning",
            "     - Body",
        ]
        for status, response in sorted(responses.items()):
            bodies = [
                f"{_literal(media)} {schema_type(content.get('schema', {}))}"
                for media, content in (response.get("content") or {}).items()
            ]
            headers = list((response.get("headers") or {}).keys())
            meaning = markdown_to_rst(response.get("description", ""))
            if headers:
                meaning += "; headers: " + ", ".join(_literal(h) for h in headers)
            out += [
                f"   * - **{status}**",
                f"     - {_cell(meaning)}",
                f"     - {_cell(', '.join(bodies))}",
            ]
        out.append("")
    return out


def render_http(schema: dict[str, Any], public: set[tuple[str, str]]) -> str:
    """The HTTP reference: every operation grouped by tag, then every component schema."""
    info = schema.get("info", {})
    tags = [t["name"] for t in schema.get("tags", [])]
    tag_text = {t["name"]: t.get("description", "") for t in schema.get("tags", [])}
    operations: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                op = item[method]
                tag = (op.get("tags") or ["other"])[0]
                operations.setdefault(tag, []).append((method, path, op))
                if tag not in tags:
                    tags.append(tag)

    out = [
        ".. This file is generated from create_app()'s OpenAPI schema by docs/_ext/generate.py.",
        "",
        f"OpenAPI {_literal(schema.get('openapi', ''))}, API version {_literal(info.get('version', ''))}.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 10 36 20 34",
        "",
        "   * - Method",
        "     - Path",
        "     - Operation id",
        "     - Summary",
    ]
    for tag in tags:
        for method, path, op in operations.get(tag, []):
            out += [
                f"   * - {method.upper()}",
                f"     - :ref:`{path} <{_operation_anchor(method, path)}>`",
                f"     - {_cell(_literal(op.get('operationId', '')))}",
                f"     - {_cell(markdown_to_rst(op.get('summary', '')))}",
            ]
    out.append("")
    for tag in tags:
        if tag not in operations:
            continue
        out += [_heading(tag.capitalize(), "-")]
        if tag_text.get(tag):
            out += [markdown_to_rst(tag_text[tag]), ""]
        for method, path, op in operations[tag]:
            out += _render_operation(method, path, op, (method, path.rstrip("/") or "/") in public)
    schemas = schema.get("components", {}).get("schemas", {})
    if schemas:
        out += [_heading("Schemas", "-")]
        for name in sorted(schemas):
            out += _render_schema(name, schemas[name])
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- modules


def public_modules() -> list[str]:
    """Every importable module of ``app`` whose dotted name has no ``_``-prefixed part."""
    import app

    names = ["app"]
    for info in pkgutil.walk_packages(app.__path__, prefix="app."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def render_modules(names: list[str]) -> dict[str, str]:
    """One autodoc page per module, keyed by the page name (``reference/modules.rst`` globs them)."""
    pages: dict[str, str] = {}
    for name in names:
        pages[f"modules/{name}"] = "\n".join(
            [
                f".. This page is generated by docs/_ext/generate.py for {name}.",
                "",
                _heading(_literal(name), "="),
                f".. automodule:: {name}",
                "   :members:",
                "   :show-inheritance:",
                "",
            ]
        )
    return pages


# --------------------------------------------------------------------------- autodoc hooks


def expose_route_handlers(application: Any) -> None:
    """Let autodoc document route handlers as the methods they were written as.

    A controller's ``@get``/``@post`` methods are ``HTTPRouteHandler`` objects on the class,
    which autodoc does not recognise. In the docs build only (the app has been exported by
    then), each is replaced on its class by its function, whose docstring gets the routes it
    serves as a first line. Never call this in a process that builds apps afterwards.
    """
    from litestar import Controller
    from litestar.handlers import HTTPRouteHandler

    routes: dict[int, list[str]] = {}
    for route in application.routes:
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)
        for handler in getattr(route, "route_handlers", []):
            methods = sorted(m for m in handler.http_methods if m not in {"HEAD", "OPTIONS"})
            fn = getattr(handler.fn, "__func__", handler.fn)  # a controller's handlers are bound
            routes.setdefault(id(fn), []).extend(f"{m} {path}" for m in methods)

    def controllers(cls: type) -> list[type]:
        found = []
        for sub in cls.__subclasses__():
            found += [sub, *controllers(sub)]
        return found

    for cls in controllers(Controller):
        if not cls.__module__.startswith("app."):
            continue
        for name, member in list(vars(cls).items()):
            if isinstance(member, HTTPRouteHandler):
                fn = member.fn
                served = ", ".join(f"``{r}``" for r in dict.fromkeys(routes.get(id(fn), [])))
                doc = inspect.cleandoc(fn.__doc__ or "")
                fn.__doc__ = f"Route handler: {served}.\n\n{doc}" if served else doc
                setattr(cls, name, fn)


def skip_framework_members(
    _app: Any, what: str, name: str, obj: Any, skip: bool, _options: Any
) -> bool | None:
    """Skip what a class inherits from a framework base (Litestar ``Controller`` settings...).

    Those attributes are documented by the framework; a subclass that sets ``path`` or
    ``tags`` would otherwise repeat the framework's text for each of them.
    """
    if what != "class" or skip:
        return None
    owner = getattr(obj, "__objclass__", None)
    if owner is not None and not owner.__module__.startswith("app"):
        return True  # a slot the class inherits untouched
    from litestar import Controller

    if name in Controller.__slots__ and not callable(obj):
        return True  # a controller setting (``path``, ``tags``...) the subclass gives a value
    return None


def plain_attribute_docstrings(
    _app: Any, what: str, _name: str, _obj: Any, _options: Any, lines: list[str]
) -> None:
    """Undo napoleon reading ``#: text: more text`` as ``type: description``.

    Our attribute comments are prose (types come from the annotations), so a colon in their
    first line is punctuation. Runs after napoleon, which turned ``A: b`` into ``b`` and a
    trailing ``:type: A``; this puts the sentence back together.
    """
    if what not in {"attribute", "data", "property"}:
        return
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith(":type: "):
            head = lines.pop(index)[len(":type: ") :]
            if index > 0 and not lines[index - 1].strip():
                lines.pop(index - 1)
            first = next((k for k, line in enumerate(lines) if line.strip()), None)
            if first is None:
                lines.append(head)
            else:
                lines[first] = f"{head}: {lines[first].lstrip()}"
            return


# --------------------------------------------------------------------------- Sphinx hook


def generate(_app: Any = None) -> None:
    """Write every generated page into ``docs/_generated``."""
    _write(GENERATED / "settings.rst", render_settings())
    application = build_app()
    schema, public = export_openapi(application)
    _write(GENERATED / "openapi.json", json.dumps(schema, indent=2, sort_keys=True) + "\n")
    _write(GENERATED / "http.rst", render_http(schema, public))
    # Last: it changes the controller classes, which only the docs build may do.
    expose_route_handlers(application)
    pages = render_modules(public_modules())
    wanted = {GENERATED / f"{name}.rst" for name in pages}
    for stale in (GENERATED / "modules").glob("*.rst"):
        if stale not in wanted:
            stale.unlink()
    for name, text in pages.items():
        _write(GENERATED / f"{name}.rst", text)


def setup(app: Any) -> dict[str, Any]:
    """Register the generator with Sphinx (runs before the sources are read)."""
    app.connect("builder-inited", generate)
    app.connect("autodoc-skip-member", skip_framework_members)
    # After napoleon (priority 500), which rewrites attribute docstrings.
    app.connect("autodoc-process-docstring", plain_attribute_docstrings, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
