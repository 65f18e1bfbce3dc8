"""CardDAV discovery (RFC 6764, RFC 5397, RFC 6352 section 7), OPTIONS, PROPFIND and credentials."""

from __future__ import annotations

import pytest

from tests.dav import CS, C, D, basic, dav, error_condition, make_dav_user, multistatus, propfind_body


@pytest.fixture
async def me(client, user):
    return await make_dav_user(client, user)


async def test_well_known_redirects_to_the_dav_root(client):
    for method in ("GET", "PROPFIND"):
        response = await client.request(method, "/.well-known/carddav", follow_redirects=False)
        assert response.status_code == 301
        assert response.headers["location"] == "/dav/"


async def test_options_advertises_carddav_without_credentials(client):
    response = await client.options("/dav/")
    assert response.status_code == 200
    assert response.headers["dav"] == "1, 3, addressbook"
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"PROPFIND", "REPORT", "GET", "PUT", "DELETE", "OPTIONS"} <= allowed


async def test_discovery_chain(client, me):
    root = multistatus(
        await dav(client, "PROPFIND", "/dav/", me, propfind_body("D:current-user-principal"), {"Depth": "0"})
    )
    principal = root["/dav/"].props[f"{D}current-user-principal"].findtext(f"{D}href")
    assert principal == me.principal

    found = multistatus(
        await dav(client, "PROPFIND", principal, me, propfind_body("C:addressbook-home-set"), {"Depth": "0"})
    )
    home = found[principal].props[f"{C}addressbook-home-set"].findtext(f"{D}href")
    assert home == me.home

    listing = multistatus(
        await dav(
            client,
            "PROPFIND",
            home,
            me,
            propfind_body(
                "D:resourcetype",
                "D:displayname",
                "C:supported-address-data",
                "CS:getctag",
                "D:sync-token",
                "D:supported-report-set",
                "D:current-user-privilege-set",
            ),
            {"Depth": "1"},
        )
    )
    assert set(listing) == {home, me.book}
    book = listing[me.book]
    assert book.props[f"{D}resourcetype"].find(f"{D}collection") is not None
    assert book.props[f"{D}resourcetype"].find(f"{C}addressbook") is not None
    assert book.text(f"{D}displayname") == "Contacts"
    versions = {
        node.get("version")
        for node in book.props[f"{C}supported-address-data"].findall(f"{C}address-data-type")
    }
    assert versions == {"3.0", "4.0"}
    assert book.text(f"{CS}getctag") == book.text(f"{D}sync-token") != ""
    reports = {r[0][0].tag for r in book.props[f"{D}supported-report-set"]}
    assert reports == {f"{C}addressbook-multiget", f"{C}addressbook-query", f"{D}sync-collection"}
    privileges = {p[0].tag for p in book.props[f"{D}current-user-privilege-set"]}
    assert {f"{D}read", f"{D}write", f"{D}bind", f"{D}unbind"} <= privileges
    # The home itself is a plain collection.
    assert listing[home].props[f"{D}resourcetype"].find(f"{C}addressbook") is None


async def test_unknown_properties_are_404_propstats(client, me):
    body = propfind_body("D:displayname", "D:quota-used-bytes").replace(
        "<D:quota-used-bytes/>", '<D:quota-used-bytes/><X:colour xmlns:X="urn:x-test"/>'
    )
    member = multistatus(await dav(client, "PROPFIND", me.book, me, body, {"Depth": "0"}))[me.book]
    assert member.text(f"{D}displayname") == "Contacts"
    assert set(member.missing) == {f"{D}quota-used-bytes", "{urn:x-test}colour"}
    assert all(" 404 " in status for status in member.missing.values())


async def test_allprop_and_propname(client, me):
    allprop = multistatus(await dav(client, "PROPFIND", me.book, me, None, {"Depth": "0"}))[me.book]
    assert f"{D}resourcetype" in allprop.props
    assert f"{D}sync-token" in allprop.props
    propname = multistatus(
        await dav(
            client,
            "PROPFIND",
            me.book,
            me,
            '<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>',
            {"Depth": "0"},
        )
    )[me.book]
    assert propname.props[f"{D}displayname"].text is None  # names only


async def test_depth_infinity_is_refused(client, me):
    response = await dav(
        client, "PROPFIND", me.home, me, propfind_body("D:resourcetype"), {"Depth": "infinity"}
    )
    assert response.status_code == 403
    assert error_condition(response) == f"{D}propfind-finite-depth"


async def test_bad_depth_is_400(client, me):
    response = await dav(client, "PROPFIND", me.home, me, propfind_body("D:resourcetype"), {"Depth": "2"})
    assert response.status_code == 400


async def test_another_users_paths_are_404_like_missing_ones(client, me, user_factory):
    other = await make_dav_user(client, await user_factory())
    for path in (
        other.principal,
        other.home,
        other.book,
        other.card("x.vcf"),
        "/dav/nowhere/",
        f"{me.book}a/b.vcf",
    ):
        for method, body in (("PROPFIND", propfind_body("D:resourcetype")), ("GET", None), ("DELETE", None)):
            response = await dav(client, method, path, me, body, {"Depth": "0"})
            assert response.status_code == 404, (method, path)
    put = await dav(
        client, "PUT", other.card("x.vcf"), me, b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:X\r\nEND:VCARD\r\n"
    )
    assert put.status_code == 404
    theirs_listing = await dav(
        client, "PROPFIND", other.book, other, propfind_body("D:getetag"), {"Depth": "1"}
    )
    assert list(multistatus(theirs_listing)) == [other.book]  # nothing was written into their book
    # The same paths as a missing card of my own: no difference to see.
    mine = await dav(client, "GET", me.card("x.vcf"), me)
    theirs = await dav(client, "GET", other.card("x.vcf"), me)
    assert (mine.status_code, mine.content) == (theirs.status_code, theirs.content)


@pytest.mark.parametrize("method", ["PROPFIND", "GET", "PUT", "DELETE", "REPORT", "PROPPATCH"])
async def test_no_credentials_is_401_basic(client, me, method):
    response = await client.request(method, me.book, headers={"Depth": "0"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="contacts"'


async def test_wrong_credentials_are_401(client, me):
    cases = [
        basic(me.user.email, "wrong-" + me.password),
        basic(me.user.email, me.user.password),  # the account password never works here
        basic("nobody@example.com", me.password),
        me.user.headers,  # a bearer token is not a Basic credential
        {"Authorization": "Basic !!!"},
    ]
    for headers in cases:
        response = await client.request("PROPFIND", me.book, headers={**headers, "Depth": "0"})
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == 'Basic realm="contacts"'


async def test_a_revoked_app_password_stops_at_once(client, me):
    assert (await dav(client, "PROPFIND", me.book, me, None, {"Depth": "0"})).status_code == 207
    listed = (await client.get("/api/users/me/app-passwords/", headers=me.user.headers)).json()
    revoked = await client.delete(f"/api/users/me/app-passwords/{listed[0]['id']}", headers=me.user.headers)
    assert revoked.status_code == 204
    assert (await dav(client, "PROPFIND", me.book, me, None, {"Depth": "0"})).status_code == 401


async def test_dav_is_not_in_the_openapi_document(client):
    document = (await client.get("/schema/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith(("/dav", "/.well-known"))]


@pytest.mark.parametrize(
    ("method", "status"), [("MKCOL", 403), ("MOVE", 403), ("COPY", 403), ("LOCK", 405), ("POST", 405)]
)
async def test_unsupported_methods(client, me, method, status):
    response = await dav(client, method, me.book, me)
    assert response.status_code == status
    assert "PROPFIND" in response.headers["allow"]


async def test_proppatch_is_refused_per_property(client, me):
    body = (
        '<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:displayname>Mine</D:displayname></D:prop></D:set>'
        "</D:propertyupdate>"
    )
    member = multistatus(await dav(client, "PROPPATCH", me.book, me, body))[me.book]
    assert member.missing == {f"{D}displayname": "HTTP/1.1 403 Forbidden"}
    after = multistatus(
        await dav(client, "PROPFIND", me.book, me, propfind_body("D:displayname"), {"Depth": "0"})
    )
    assert after[me.book].text(f"{D}displayname") == "Contacts"


async def test_wrong_credentials_are_rate_limited_like_login(make_client, user_factory):
    async with make_client(rate_limit_enabled=True, rate_limit_auth_per_minute=3) as client:
        statuses = []
        for attempt in range(6):
            response = await client.request(
                "PROPFIND", "/dav/", headers={**basic("nobody@example.com", f"guess-{attempt}"), "Depth": "0"}
            )
            statuses.append(response.status_code)
        assert statuses[:3] == [401, 401, 401]
        assert statuses[-1] == 429
        assert int(response.headers["retry-after"]) > 0
