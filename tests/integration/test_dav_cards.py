"""CardDAV cards (RFC 6352 sections 5 and 6.3, RFC 4918 section 9, RFC 7232 preconditions)."""

from __future__ import annotations

import pytest

from tests.dav import C, D, dav, error_condition, make_dav_user, multistatus, propfind_body, vcard

VCARD = {"Content-Type": "text/vcard; charset=utf-8"}


@pytest.fixture
async def me(client, user):
    return await make_dav_user(client, user)


async def put(client, me, name, text, **headers):
    return await dav(client, "PUT", me.card(name), me, text.encode(), {**VCARD, **headers})


async def test_put_get_head_delete(client, me):
    created = await put(client, me, "ada.vcf", vcard("ada-1", "Ada Lovelace", "TEL;TYPE=cell:+44 20 1234"))
    assert created.status_code == 201
    etag = created.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')

    got = await dav(client, "GET", me.card("ada.vcf"), me)
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/vcard")
    assert got.headers["etag"] == etag
    assert "VERSION:3.0" in got.text
    assert "FN:Ada Lovelace" in got.text
    assert "+44 20 1234" in got.text

    head = await dav(client, "HEAD", me.card("ada.vcf"), me)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == etag

    assert (
        await dav(client, "GET", me.card("ada.vcf"), me, headers={"If-None-Match": etag})
    ).status_code == 304

    listed = multistatus(
        await dav(
            client, "PROPFIND", me.book, me, propfind_body("D:getetag", "D:getcontenttype"), {"Depth": "1"}
        )
    )
    assert listed[me.card("ada.vcf")].text(f"{D}getetag") == etag
    assert listed[me.card("ada.vcf")].text(f"{D}getcontenttype").startswith("text/vcard")

    one = multistatus(
        await dav(client, "PROPFIND", me.card("ada.vcf"), me, propfind_body("D:getetag"), {"Depth": "0"})
    )
    assert list(one) == [me.card("ada.vcf")]

    deleted = await dav(client, "DELETE", me.card("ada.vcf"), me)
    assert deleted.status_code == 204
    assert (await dav(client, "GET", me.card("ada.vcf"), me)).status_code == 404
    assert (await dav(client, "DELETE", me.card("ada.vcf"), me)).status_code == 404


async def test_replace_moves_the_etag(client, me):
    first = (await put(client, me, "a.vcf", vcard("a", "Ada Lovelace"))).headers["etag"]
    replaced = await put(client, me, "a.vcf", vcard("a", "Ada King"), **{"If-Match": first})
    assert replaced.status_code == 204
    assert replaced.headers["etag"] != first
    assert "FN:Ada King" in (await dav(client, "GET", me.card("a.vcf"), me)).text


async def test_if_match_and_if_none_match(client, me):
    etag = (await put(client, me, "a.vcf", vcard("a"))).headers["etag"]
    stale = await put(client, me, "a.vcf", vcard("a", "Ada Changed"), **{"If-Match": '"not-the-etag"'})
    assert stale.status_code == 412
    exists = await put(client, me, "a.vcf", vcard("a", "Ada Changed"), **{"If-None-Match": "*"})
    assert exists.status_code == 412
    missing = await put(client, me, "b.vcf", vcard("b"), **{"If-Match": etag})
    assert missing.status_code == 412
    assert (await dav(client, "GET", me.card("b.vcf"), me)).status_code == 404
    # Nothing changed.
    got = await dav(client, "GET", me.card("a.vcf"), me)
    assert got.headers["etag"] == etag
    assert "Changed" not in got.text
    assert (
        await dav(client, "DELETE", me.card("a.vcf"), me, headers={"If-Match": '"old"'})
    ).status_code == 412
    assert (await dav(client, "DELETE", me.card("a.vcf"), me, headers={"If-Match": etag})).status_code == 204
    created = await put(client, me, "c.vcf", vcard("c"), **{"If-None-Match": "*"})
    assert created.status_code == 201
    assert (await put(client, me, "d.vcf", vcard("d"), **{"If-Match": "*"})).status_code == 412
    assert (await put(client, me, "c.vcf", vcard("c", "Cee Changed"), **{"If-Match": "*"})).status_code == 204


async def test_uid_conflict_is_409_naming_the_card(client, me):
    await put(client, me, "first.vcf", vcard("same-uid", "Ada Lovelace"))
    response = await put(client, me, "second.vcf", vcard("same-uid", "Ada Clone"))
    assert response.status_code == 409
    assert error_condition(response) == f"{C}no-uid-conflict"
    assert b"<D:href>" + me.card("first.vcf").encode() + b"</D:href>" in response.content
    assert (await dav(client, "GET", me.card("second.vcf"), me)).status_code == 404


async def test_not_a_vcard(client, me):
    wrong_type = await dav(
        client, "PUT", me.card("x.vcf"), me, vcard("x").encode(), {"Content-Type": "application/json"}
    )
    assert wrong_type.status_code == 415
    assert error_condition(wrong_type) == f"{C}supported-address-data"
    garbage = await put(client, me, "x.vcf", "this is not a vcard")
    assert garbage.status_code == 400
    assert error_condition(garbage) == f"{C}valid-address-data"
    not_utf8 = await dav(
        client, "PUT", me.card("x.vcf"), me, b"BEGIN:VCARD\r\nFN:\xff\r\nEND:VCARD\r\n", VCARD
    )
    assert not_utf8.status_code == 400
    assert (await dav(client, "GET", me.card("x.vcf"), me)).status_code == 404


async def test_a_card_without_a_name_is_403(client, me):
    text = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:nameless\r\nEMAIL:x@example.com\r\nEND:VCARD\r\n"
    response = await put(client, me, "nameless.vcf", text)
    assert response.status_code == 403
    assert error_condition(response) == f"{C}valid-address-data"
    assert (await dav(client, "GET", me.card("nameless.vcf"), me)).status_code == 404


async def test_a_card_over_1_mb_is_413(client, me):
    big = vcard("big", "Big Card", "NOTE:" + "x" * (1024 * 1024))
    response = await put(client, me, "big.vcf", big)
    assert response.status_code == 413
    assert error_condition(response) == f"{C}max-resource-size"
    assert (await dav(client, "GET", me.card("big.vcf"), me)).status_code == 404


async def test_a_card_over_1_mb_without_content_length_is_413(client, app, me, in_app_loop):
    """Chunks with no Content-Length: the body is counted as it comes and cut past 1 MB."""
    chunks = [vcard("big", "Big Card").encode()[:-12]] + [b"NOTE:" + b"x" * 64 * 1024 + b"\r\n"] * 20
    chunks.append(b"END:VCARD\r\n")
    status, body, received = await in_app_loop(
        raw_request, app, "PUT", me.card("big.vcf"), [*me.auth.items(), *VCARD.items()], chunks
    )
    assert status == 413
    assert b"max-resource-size" in body
    assert received < len(chunks)  # it stopped reading
    assert (await dav(client, "GET", me.card("big.vcf"), me)).status_code == 404


async def raw_request(app, method, path, headers, chunks):
    """Call the ASGI app with a body in ``chunks`` (no Content-Length); return status, body, chunks read."""
    sent = {"status": 0, "body": b"", "received": 0}

    async def receive():
        index = sent["received"]
        sent["received"] += 1
        return {"type": "http.request", "body": chunks[index], "more_body": index < len(chunks) - 1}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers] + [(b"host", b"testserver.local")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver.local", 80),
    }
    await app(scope, receive, send)
    return sent["status"], sent["body"], sent["received"]


async def test_version_negotiation(client, me):
    await put(client, me, "v4.vcf", vcard("v4", "Ada Lovelace", version="4.0"))
    default = await dav(client, "GET", me.card("v4.vcf"), me)
    assert "VERSION:3.0" in default.text
    four = await dav(client, "GET", me.card("v4.vcf"), me, headers={"Accept": "text/vcard; version=4.0"})
    assert "VERSION:4.0" in four.text
    assert four.headers["etag"] == default.headers["etag"]
    assert "Accept" in four.headers["vary"]


async def test_put_on_a_collection_is_405(client, me):
    response = await dav(client, "PUT", me.book, me, vcard("x").encode(), VCARD)
    assert response.status_code == 405
    assert (await dav(client, "DELETE", me.book, me)).status_code == 403
    assert (await dav(client, "GET", me.book, me)).status_code == 405


async def test_card_names_are_percent_decoded_and_encoded(client, me):
    response = await dav(client, "PUT", me.book + "a%20b%40c.vcf", me, vcard("ab").encode(), VCARD)
    assert response.status_code == 201
    listed = multistatus(
        await dav(client, "PROPFIND", me.book, me, propfind_body("D:getetag"), {"Depth": "1"})
    )
    assert me.book + "a%20b%40c.vcf" in listed
    assert (await dav(client, "GET", me.book + "a%20b%40c.vcf", me)).status_code == 200


async def test_a_depth_1_listing_is_streamed(client, app, me, in_app_loop):
    """The multistatus of a book leaves in several body messages as the cards are read."""
    for index in range(300):
        await put(client, me, f"c{index}.vcf", vcard(f"uid-{index}", f"Card Number{index}"))
    body = b'<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:getcontenttype/></D:prop></D:propfind>'
    messages = await in_app_loop(
        raw_messages,
        app,
        "PROPFIND",
        me.book,
        [*me.auth.items(), ("Depth", "1"), ("Content-Type", "application/xml")],
        body,
    )
    start, *bodies = messages
    assert start["status"] == 207
    assert b"content-length" not in dict(start["headers"])
    assert len(bodies) > 2
    assert all(m["more_body"] for m in bodies[:-1])
    assert not bodies[-1]["more_body"]
    assert b"".join(m["body"] for m in bodies).count(b"<D:response>") == 301


async def raw_messages(app, method, path, headers, body):
    """Call the ASGI app; return every message it sent."""
    messages = []
    done = False

    async def receive():
        nonlocal done
        if done:
            return {"type": "http.disconnect"}
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers] + [(b"host", b"testserver.local")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver.local", 80),
    }
    await app(scope, receive, send)
    return messages


async def test_json_rules_still_hold_for_cards(client, me):
    """A card whose JSON view breaks a rule of the JSON API is refused like the JSON write, nothing stored."""
    await put(client, me, "a.vcf", vcard("a", "Ada Lovelace", "EMAIL:same@example.com"))
    twin = await put(client, me, "b.vcf", vcard("b", "Bob Builder", "EMAIL:same@example.com"))
    assert twin.status_code == 409
    assert (await dav(client, "GET", me.card("b.vcf"), me)).status_code == 404
    too_long = await put(client, me, "c.vcf", vcard("c", "A" * 300 + " Long"))
    assert 400 <= too_long.status_code < 500
    assert (await dav(client, "GET", me.card("c.vcf"), me)).status_code == 404
    contacts = (await client.get("/api/contacts/", headers=me.user.headers)).json()
    assert contacts["total"] == 1
