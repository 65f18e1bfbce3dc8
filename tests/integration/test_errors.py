"""Errors mapped once, centrally, for every route."""


async def test_deeply_nested_json_is_400_on_any_json_route(client, user):
    body = "[" * 100_000 + "]" * 100_000
    for path in ("/api/contacts/", "/api/auth/register"):
        response = await client.post(
            path, content=body, headers={**user.headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 400, path
        assert "nested too deeply" in response.json()["detail"]


async def test_error_details_never_repeat_a_token_from_the_path(client):
    response = await client.post("/api/auth/confirm_update_password/SECRETTOKEN123", json={"password": 5})
    assert response.status_code == 400
    assert response.json()["extra"][0]["key"] == "password"
    assert "SECRETTOKEN123" not in response.text
