"""Answers that help at the HTTP edge: 405 with Allow, a pointer to the gateway for fires sent to
the API, 415 naming what was sent, "did you mean" for unknown fields, 404 for unknown companies."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import uuid
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from tests.integration.api_client import Client, api_app, auth, call
from tests.integration.test_gateway_hardening import closed_by_server
from tests.support import Stack, served, start_service


async def test_known_path_with_the_wrong_method_is_405_with_allow(client: Client, admin_token: str) -> None:
    resp = await client.delete("/api/companies", headers=auth(admin_token))
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}
    body = await resp.json()
    assert body["error"] == "method DELETE not allowed on /api/companies"
    assert set(body["details"]["allowed"]) >= {"GET", "POST"}


async def test_405_for_a_templated_path(client: Client, admin_token: str) -> None:
    resp = await client.put(f"/api/routines/{uuid.uuid4()}/run", headers=auth(admin_token))
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"


async def test_unknown_path_is_still_a_json_404(client: Client) -> None:
    resp = await client.get("/api/nothing-here")
    assert resp.status == 404
    assert (await resp.json())["error"] == "no route for GET /api/nothing-here"


async def test_a_webhook_fire_sent_to_the_api_says_where_the_gateway_is(client: Client) -> None:
    resp = await client.post("/api/routine-triggers/public/abc123/fire", json={})
    assert resp.status == 404
    body = await resp.json()
    assert "webhook gateway" in body["error"]
    assert body["details"]["fireUrl"] == "https://hooks.example.test/api/routine-triggers/public/abc123/fire"


async def test_415_names_the_content_type_received(client: Client, admin_token: str) -> None:
    resp = await client.post(
        "/api/companies",
        data="name=Acme",
        headers={**auth(admin_token), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 415
    body = await resp.json()
    assert "application/x-www-form-urlencoded" in body["error"]
    assert "application/json" in body["error"]


async def test_unknown_field_suggests_the_right_one(client: Client, admin_token: str) -> None:
    company = await call(client, "POST", "/api/companies", admin_token, {"name": "Acme"}, 201)
    body = {"title": "Daily", "assignee": str(uuid.uuid4()), "projectId": str(uuid.uuid4())}
    resp = await client.post(f"/api/companies/{company['id']}/routines", json=body, headers=auth(admin_token))
    assert resp.status == 400
    details = (await resp.json())["details"]
    unknown = next(d for d in details if d["field"] == "assignee")
    assert "did you mean assigneeAgentId?" in unknown["message"]


async def test_snake_case_field_suggests_camel_case(client: Client, admin_token: str) -> None:
    resp = await client.post(
        "/api/cron/preview",
        json={"cron_expression": "0 9 * * *"},
        headers=auth(admin_token),
    )
    assert resp.status == 400
    details = (await resp.json())["details"]
    unknown = next(d for d in details if d["field"] == "cron_expression")
    assert "did you mean cronExpression?" in unknown["message"]


@pytest.mark.parametrize("collection", ["routines", "agents", "projects", "goals", "issues"])
async def test_instance_admin_listing_in_a_missing_company_is_404(
    client: Client, admin_token: str, collection: str
) -> None:
    resp = await client.get(f"/api/companies/{uuid.uuid4()}/{collection}", headers=auth(admin_token))
    assert resp.status == 404
    assert (await resp.json())["error"] == "company not found"


async def _raw(client: Client, request: bytes) -> tuple[int, bytes]:
    """Send `request` as bytes (no client library to normalise it) and read the status and body."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer rtb_\xff\xfe",
        b"Authorization: Bearer rtb_caf\xe9",
        b"Cookie: routines_console=abc\xff",
        b"Cookie: routines_console=abc\r\nX-CSRF-Token: \xff",
    ],
    ids=["bearer", "bearer-latin1", "session-cookie", "csrf-token"],
)
async def test_credentials_that_are_not_utf8_are_refused_not_a_500(client: Client, header: bytes) -> None:
    """Header bytes that are not UTF-8 reach the handler as lone surrogates; hashing or comparing
    them raised UnicodeEncodeError (a 500, a traceback and a tick of the 5xx alert for anyone)."""
    request = (
        b"PATCH /api/routines/%s HTTP/1.1\r\nHost: api\r\nConnection: close\r\n" % str(uuid.uuid4()).encode()
    )
    request += header + b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    status, body = await _raw(client, request)
    assert status in (401, 403), body
    assert set(json.loads(body)) == {"error", "details"}


@pytest.mark.parametrize("compressed", [False, True], ids=["labelled-only", "really-gzipped"])
async def test_an_encoded_body_is_refused_415_not_inflated(
    client: Client, admin_token: str, compressed: bool
) -> None:
    """A body labelled `Content-Encoding: gzip` used to go to aiohttp's decompressor: a plain body
    so labelled was a 500, a real one was inflated past the size checks (and, at the gateway,
    signatures were checked over the inflated bytes, not those sent)."""
    body = json.dumps({"name": "Acme"}).encode()
    resp = await client.post(
        "/api/companies",
        data=gzip.compress(body) if compressed else body,
        headers={**auth(admin_token), "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 415
    answer = await resp.json()
    assert answer["error"] == "Content-Encoding gzip is not supported; send the body uncompressed"
    assert answer["details"] == {"received": "gzip", "expected": "identity"}


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        "from=0001-01-01T00:00:00%2B01:00",  # an offset takes it before year 1: no UTC for it
        "to=9999-12-31T23:59:59-01:00",  # … or past year 9999
        "cursor=" + _cursor(b'["0001-01-01T00:00:00+01:00", "00000000-0000-0000-0000-000000000000"]'),
        "cursor=" + _cursor(b'["9999-12-31T23:59:59-01:00", "00000000-0000-0000-0000-000000000000"]'),
        "cursor=" + _cursor(b"[" * 3000 + b"]" * 3000),  # nested past the JSON decoder's recursion
    ],
    ids=["from-before-year-1", "to-after-9999", "cursor-before-year-1", "cursor-after-9999", "cursor-deep"],
)
async def test_query_instants_and_cursors_out_of_any_range_are_400(
    client: Client, admin_token: str, query: str
) -> None:
    resp = await client.get(f"/api/routines/{uuid.uuid4()}/runs?{query}", headers=auth(admin_token))
    assert resp.status == 400, await resp.text()
    assert "query parameter" in (await resp.json())["error"]


@pytest.mark.e2e
async def test_the_api_closes_slow_headers_and_answers_a_slow_body_408(
    stack: Stack, admin_token: str, tmp_path: Path
) -> None:
    """The API had no header or body timeout (the gateway had both): a connection trickling
    header lines stayed open past 150 s, and a body that never came held its handler."""
    api = start_service("api", stack.env(header_timeout_sec=1, body_timeout_sec=2), tmp_path)
    try:
        head = (
            f"POST /api/companies HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {admin_token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        ).encode()
        cases = {
            "partial headers": [(head[:40], 0.0)],
            "trickled headers": [(bytes([b]), 0.2) for b in head],
            "partial body": [(head + b'{"name": ', 0.0)],
        }
        results = await asyncio.gather(
            *(closed_by_server("127.0.0.1", api.port, send, within=20) for send in cases.values())
        )
    finally:
        api.stop()
    answers = dict(zip(cases, results, strict=True))
    assert answers["partial headers"] == answers["trickled headers"] == b""  # closed, no request made
    status_line, _, rest = answers["partial body"].partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answers["partial body"][:200]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["details"] == {"bodyTimeoutSec": 2.0}


async def test_the_sign_in_page_shows_no_text_from_the_link(client: Client) -> None:
    """`/console/login?error=…` printed any text on the sign-in page (escaped, but a link could
    carry a phishing message)."""
    resp = await client.get("/console/login?error=Your+account+is+locked.+Call+555-0100")
    assert resp.status == 200
    assert "555-0100" not in await resp.text()


async def test_an_expectation_aiohttp_refuses_itself_is_still_a_json_error(
    client: Client, admin_token: str
) -> None:
    """`Expect: 200-ok` is refused by aiohttp before any middleware runs: it was a plain-text
    `Unknown Expect: 200-ok`, the one answer outside the JSON error shape."""
    resp = await client.get("/api/companies", headers={**auth(admin_token), "Expect": "200-ok"})
    assert resp.status == 417
    assert resp.headers["Content-Type"].startswith("application/json")
    assert await resp.json() == {"error": "Unknown Expect: 200-ok", "details": None}
    assert resp.headers["Server"] == "routines"


async def test_a_second_content_encoding_header_does_not_slip_past(client: Client, admin_token: str) -> None:
    """The check read the first Content-Encoding header; aiohttp's parser heeds the last."""
    encodings = [("Content-Encoding", "identity"), ("Content-Encoding", "gzip")]
    headers = CIMultiDict([*auth(admin_token).items(), ("Content-Type", "application/json"), *encodings])
    resp = await client.post("/api/companies", data=gzip.compress(b'{"name": "Acme"}'), headers=headers)
    assert resp.status == 415
    assert (await resp.json())["details"] == {"received": "identity, gzip", "expected": "identity"}


async def test_the_console_sign_in_form_has_the_body_timeout_too(stack: Stack) -> None:
    """The sign-in and sign-out forms were read without the body timeout JSON bodies have: an
    unauthenticated sender trickling a form held a connection as long as it liked."""
    async with TestClient(served(api_app(stack, body_timeout_sec=1))) as client:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(
            b"POST /console/login HTTP/1.1\r\nHost: api\r\nCookie: routines_console_login=abc\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncsrf="
        )
        answer = await asyncio.wait_for(reader.readline(), timeout=10)  # the status line
        writer.close()
    assert answer.split(b" ", 2)[1] == b"408", answer[:200]


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP answer off a keep-alive connection: its status and body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    body = await asyncio.wait_for(reader.readexactly(int(fields["Content-Length"])), timeout=10)
    return int(lines[0].split(" ", 2)[1]), body


@pytest.mark.parametrize("split", [False, True], ids=["body-received-whole", "rest-after-the-answer"])
async def test_a_refusal_that_never_read_the_body_keeps_the_connection_in_step(
    client: Client, split: bool
) -> None:
    """A request refused before its body is read (401 here): the body — received whole, or its
    rest arriving after the answer — is read and dropped after the answer, and the next request
    on the connection is answered as itself, never parsed out of the refused body."""
    body = json.dumps({"name": "x" * 3000}).encode()
    head = b"POST /api/companies HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    following = b"GET /livez HTTP/1.1\r\nHost: api\r\n\r\n"
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        if split:
            writer.write(head + body[:1000])
            refused = await _answer(reader)
            writer.write(body[1000:] + following)
        else:
            writer.write(head + body + following)
            refused = await _answer(reader)
        answered = await _answer(reader)
    finally:
        writer.close()
    assert refused[0] == 401, refused
    assert answered == (200, b'{"status": "ok"}')
