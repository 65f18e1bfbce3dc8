from app.config import Settings
from tests.conftest import ON_POSTGRES


async def test_health_ok(client):
    response = await client.get("/api/healthchecker")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "ok"}
    assert response.headers["x-request-id"]


async def test_health_database_down_is_503_naming_it(make_client, settings: Settings, tmp_path):
    if ON_POSTGRES:
        down = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
    else:
        down = f"sqlite+aiosqlite:///{tmp_path}/missing-dir/db.sqlite"
    async with make_client(database_url=down, health_timeout=1.0) as client:
        response = await client.get("/api/healthchecker")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unavailable", "cache": "ok"}


async def test_health_cache_down_degrades_but_serves(make_client, settings: Settings):
    # A real outage: nothing listens on this port.
    async with make_client(redis_url="redis://127.0.0.1:1/0") as client:
        response = await client.get("/api/healthchecker")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "database": "ok", "cache": "unavailable"}


async def test_unknown_route_is_404_in_error_shape(client):
    response = await client.get("/api/nope")
    assert response.status_code == 404
    assert response.json()["status_code"] == 404


async def test_request_id_is_echoed_when_sane(client):
    response = await client.get("/api/healthchecker", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    response = await client.get("/api/healthchecker", headers={"X-Request-ID": "bad id with spaces"})
    assert response.headers["x-request-id"] != "bad id with spaces"


async def test_openapi_served(client):
    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["openapi"].startswith("3.1")
    assert schema["info"]["title"] == "Contacts API"
    assert {t["name"] for t in schema["tags"]} >= {"auth", "users", "contacts", "health"}
    assert (await client.get("/schema/openapi.yaml")).status_code == 200
    page = await client.get("/schema")
    assert page.status_code == 200
    assert "scalar" in page.text.lower()


async def test_request_ids_are_unique_per_request(client):
    ids = [(await client.get("/api/healthchecker")).headers["x-request-id"] for _ in range(5)]
    assert len(set(ids)) == 5
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


async def test_start_up_freezes_its_objects_and_spaces_out_collections(make_client):
    import gc

    from app.main import GC_GEN0_THRESHOLD

    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    async with make_client():
        assert gc.get_freeze_count() > 0  # start-up objects are out of the collector's way
        assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
