"""The served OpenAPI document: valid, and exact enough for a generated client (issue 20).

Every check walks the whole document, so routes added later are held to the same rules.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from app.openapi_ui import public_operations

METHODS = ("get", "put", "post", "delete", "patch")
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture
async def document(client) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON schema object below ``node`` (anything with a type, a oneOf or a $ref)."""
    if isinstance(node, dict):
        if {"type", "oneOf", "anyOf", "$ref"} & node.keys():
            yield node
        for value in node.values():
            yield from schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from schemas(value)


async def test_the_served_document_is_valid_openapi(document):
    validate(document)  # raises on the first error
    flow = document["components"]["securitySchemes"]["BearerToken"]["flows"]["password"]
    assert flow == {"tokenUrl": "/api/auth/login", "scopes": {}}


async def test_operation_ids_are_short_unique_and_stable(document):
    ids = {(method, path): op["operationId"] for method, path, op in operations(document)}
    assert len(set(ids.values())) == len(ids)
    for operation_id in ids.values():
        assert re.fullmatch(r"[a-z][a-z0-9_]{2,29}", operation_id), operation_id
    assert ids[("post", "/api/auth/register")] == "register"
    assert ids[("post", "/api/auth/login")] == "login"
    assert ids[("post", "/api/auth/refresh_token")] == "refresh_token"
    assert ids[("post", "/api/auth/logout")] == "logout"
    assert ids[("get", "/api/auth/confirmed_email/{token}")] == "confirm_email"
    assert ids[("post", "/api/auth/request_email")] == "request_email"
    assert ids[("post", "/api/auth/update_password")] == "request_password_reset"
    assert ids[("get", "/api/users/me")] == "get_me"
    assert ids[("get", "/api/contacts")] == "list_contacts"
    assert ids[("get", "/api/contacts/{contact_id}")] == "get_contact"
    assert ids[("get", "/api/contacts/export")] == "export_contacts"


async def test_schema_names_are_plain_words(document):
    names = set(document["components"]["schemas"])
    for name in names:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", name), name
    assert {"UserPage", "ContactPage", "ErrorBody", "ValidationError"} <= names
    ok = "200"
    users = document["paths"]["/api/users"]["get"]["responses"][ok]["content"]["application/json"]
    contacts = document["paths"]["/api/contacts"]["get"]["responses"][ok]["content"]["application/json"]
    assert users["schema"] == {"$ref": "#/components/schemas/UserPage"}
    assert contacts["schema"] == {"$ref": "#/components/schemas/ContactPage"}


async def test_nullable_fields_are_type_lists_with_their_constraints(document):
    for schema in schemas(document):
        branches = schema.get("oneOf", [])
        assert len(branches) != 1, schema
        simple = [b for b in branches if "$ref" not in b and b.get("type") not in ("null", "array")]
        if any(b.get("type") == "null" for b in branches):
            assert not (len(branches) == 2 and simple and "enum" not in simple[0]), schema
    components = document["components"]["schemas"]
    note = components["ContactUpdate"]["properties"]["additional_data"]
    assert (note["type"], note["maxLength"]) == (["string", "null"], 500)
    assert "oneOf" not in note
    assert components["ContactUpdate"]["properties"]["first_name"]["type"] == "string"
    assert components["ContactUpdate"]["properties"]["first_name"]["maxLength"] == 50
    birthday = components["Contact"]["properties"]["birthday"]
    assert (birthday["type"], birthday["format"]) == (["string", "null"], "date")


async def test_parameters_are_never_nullable(document):
    for method, path, op in operations(document):
        for parameter in op.get("parameters", []):
            schema = parameter["schema"]
            assert "null" not in str(schema.get("type")), (method, path, parameter["name"])
            assert "oneOf" not in schema, (method, path, parameter["name"])
    (first_name,) = [
        p for p in document["paths"]["/api/contacts"]["get"]["parameters"] if p["name"] == "first_name"
    ]
    assert (first_name["schema"]["type"], first_name["schema"]["maxLength"]) == ("string", 254)


async def test_a_contact_id_is_a_uuid_everywhere(document):
    assert document["components"]["schemas"]["Contact"]["properties"]["id"]["format"] == "uuid"
    seen = []
    for method, path, op in operations(document):
        for parameter in op.get("parameters", []):
            if parameter["name"] in ("contact_id", "user_id"):
                assert parameter["schema"]["format"] == "uuid", (method, path)
                seen.append((method, parameter["name"]))
    assert {("get", "contact_id"), ("delete", "contact_id"), ("patch", "user_id")} <= set(seen)


async def test_malformed_contact_id_is_still_a_404(client, user):
    for raw in ("not-a-uuid", "123"):
        response = await client.get(f"/api/contacts/{raw}", headers=user.headers)
        assert response.status_code == 404, response.text
    unknown = await client.get(f"/api/contacts/{uuid.uuid4()}", headers=user.headers)
    assert unknown.status_code == 404


async def test_a_204_has_no_content(document):
    seen = []
    for method, path, op in operations(document):
        if "204" in op["responses"]:
            assert "content" not in op["responses"]["204"], (method, path)
            seen.append((method, path))
    assert ("patch", "/api/users/me/password") in seen
    assert ("delete", "/api/contacts/{contact_id}") in seen


async def test_every_error_is_an_error_body_with_its_headers(client, document):
    public = public_operations(client.app)
    for method, path, op in operations(document):
        responses = op["responses"]
        where = (method, path)
        if op.get("parameters") or op.get("requestBody"):
            assert "400" in responses, where
        if where not in public:
            assert "401" in responses, where
        assert "503" in responses, where
        for status, response in responses.items():
            if not status.startswith(("4", "5")):
                continue
            schema = response["content"]["application/json"]["schema"]
            if (path, status) == ("/api/healthchecker", "503"):
                assert schema == {"$ref": "#/components/schemas/Health"}
                continue
            assert schema == ERROR_BODY, (where, status)
            headers = response.get("headers", {})
            if status == "401":
                assert headers["WWW-Authenticate"]["schema"]["type"] == "string"
            if status in ("429", "503"):
                assert headers["Retry-After"]["schema"]["type"] == "integer", (where, status)


async def test_validation_errors_are_typed(document):
    components = document["components"]["schemas"]
    extra = components["ErrorBody"]["properties"]["extra"]["oneOf"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}} in extra
    item = components["ValidationError"]
    assert set(item["properties"]) == {"message", "key", "source"}
    assert item["required"] == ["message"]


async def test_validation_errors_as_sent_match_their_schema(client, user):
    response = await client.post("/api/contacts", json={"first_name": ""}, headers=user.headers)
    assert response.status_code == 400
    for item in response.json()["extra"]:
        assert set(item) <= {"message", "key", "source"}
        assert isinstance(item["message"], str)


async def test_contact_answers_declare_their_etag(document):
    contact = document["paths"]["/api/contacts/{contact_id}"]
    answers = [
        contact["get"]["responses"]["200"],
        contact["put"]["responses"]["200"],
        contact["patch"]["responses"]["200"],
        document["paths"]["/api/contacts"]["post"]["responses"]["201"],
    ]
    for answer in answers:
        assert answer["headers"]["ETag"]["schema"] == {"type": "string"}
