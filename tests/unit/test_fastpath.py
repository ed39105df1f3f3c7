"""The fast path's request parsing (shared/fastpath.py) against aiohttp's own parser."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParser
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.fastpath import MAX_HEAD, FastRoute, JsonAnswer, encode_answer, take_request

PUBLIC_ID = "0123456789abcdef01234567"
PATH = f"/api/routine-triggers/public/{PUBLIC_ID}/fire"


async def _never(_request: Any) -> JsonAnswer:
    raise AssertionError("not called")


ROUTE = FastRoute(re.compile(r"/api/routine-triggers/public/([0-9a-f]{24})/fire"), 1000, _never)


def aiohttp_parses(data: bytes) -> list[tuple[str, str, list[tuple[str, str]], bytes]] | str:
    """What aiohttp's C parser (as the services run it) makes of `data`: its messages, or its error."""
    assert HttpRequestParser.__module__ == "aiohttp._http_parser"  # the C one (llhttp), not the fallback
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(
            BaseProtocol(loop), loop, 2**16, max_line_size=8190, max_field_size=8190, auto_decompress=False
        )
        try:
            messages, _upgraded, _tail = parser.feed_data(data)
        except Exception as exc:
            return f"error: {exc}"
        return [
            (
                m.method,
                m.path,
                [(k.decode(), v.decode()) for k, v in m.raw_headers],
                payload.read_nowait(-1) if payload.is_eof() else b"<incomplete>",
            )
            for m, payload in messages
        ]
    finally:
        loop.close()


def request(
    headers: list[tuple[str, str]], body: bytes = b"{}", start: str = f"POST {PATH} HTTP/1.1"
) -> bytes:
    return (start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode() + body


WELL_FORMED = [("Host", "gw"), ("Content-Type", "application/json"), ("Content-Length", "2")]

_names = st.sampled_from(
    [
        "Host",
        "Content-Length",
        "Content-Type",
        "X-Paperclip-Signature",
        "Idempotency-Key",
        "Connection",
        "Transfer-Encoding",
        "Content-Encoding",
        "Expect",
        "Upgrade",
        "X-Forwarded-For",
        "host",
        "content-length",
        "X Bad",
        "X-Ünï",
        "",
    ]
) | st.text(alphabet="!#$%&'*+-.^_`|~abcXYZ019:; \t", min_size=0, max_size=8)
_values = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10F), max_size=12
) | st.sampled_from(
    ["2", "02", "+2", "2 ", " 2", "-1", "0", "chunked", "keep-alive", "Keep-Alive", "close", "gzip", "gw"]
)
_starts = st.sampled_from(
    [
        f"POST {PATH} HTTP/1.1",
        f"POST {PATH} HTTP/1.1",
        f"POST {PATH} HTTP/1.1",
        f"POST {PATH} HTTP/1.0",
        f"post {PATH} HTTP/1.1",
        f"GET {PATH} HTTP/1.1",
        f"POST {PATH}?a=1 HTTP/1.1",
        f"POST {PATH.upper()} HTTP/1.1",
        f"POST  {PATH} HTTP/1.1",
        f"POST {PATH} HTTP/1.1 ",
        f"POST http://gw{PATH} HTTP/1.1",
    ]
)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=8))
    length = draw(st.sampled_from([str(len(body)), str(len(body)), f"0{len(body)}", f"+{len(body)}", "3"]))
    # Mostly near the well-formed (each part there or not), so the fast path takes some.
    usual = [("Host", "gw"), ("Content-Type", "application/json"), ("Content-Length", length)]
    headers = [h for h in usual if draw(st.integers(0, 4))]
    for extra in draw(st.lists(st.tuples(_names, _values), max_size=4)):
        headers.insert(draw(st.integers(0, len(headers))), extra)
    lines = [f"{k}:{draw(st.sampled_from([' ', '', '  ', chr(9)]))}{v}" for k, v in headers]
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\r\n", "\n"]))
    head = draw(_starts) + eol + "".join(line + eol for line in lines) + eol
    return head.encode("utf-8", "surrogatepass") + body + draw(st.sampled_from([b"", b"POST / HTTP/1.1\r\n"]))


@settings(max_examples=3000, deadline=None)
@given(_requests())
def test_what_the_fast_path_takes_aiohttp_parses_the_same(data: bytes) -> None:
    """Every request the fast path takes is one aiohttp's parser reads the same way: path, headers
    (names, values, order) and body — so it never serves a request aiohttp would refuse or read
    otherwise (no smuggling between the two). What it leaves is aiohttp's to judge."""
    taken = take_request(data, ROUTE)
    if taken is None:
        return
    path, params, headers, start, end = taken
    assert aiohttp_parses(data[:end]) == [("POST", path, list(headers.items()), data[start:end])]
    assert params == (PUBLIC_ID,)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_taken_or_left_never_an_error(data: bytes) -> None:
    taken = take_request(data, ROUTE)
    if taken is not None:
        assert aiohttp_parses(data[: taken[4]])[0][0] == "POST"


def test_a_plain_fire_is_taken_with_what_follows_it_left() -> None:
    data = request([*WELL_FORMED, ("X-Paperclip-Signature", " \t abc")], b"{}POST /next HTTP/1.1\r\n")
    taken = take_request(data, ROUTE)
    assert taken is not None
    path, params, headers, start, end = taken
    assert (path, params, data[start:end], data[end:]) == (
        PATH,
        (PUBLIC_ID,),
        b"{}",
        b"POST /next HTTP/1.1\r\n",
    )
    assert headers["x-paperclip-signature"] == "abc"  # whitespace before it is not the value's


@pytest.mark.parametrize(
    ("why", "data"),
    [
        ("body still arriving", request(WELL_FORMED, b"{")),
        ("headers still arriving", request(WELL_FORMED)[:30]),
        ("chunked", request([("Host", "gw"), ("Transfer-Encoding", "chunked")], b"0\r\n\r\n")),
        ("compressed", request([*WELL_FORMED, ("Content-Encoding", "gzip")])),
        ("expects 100-continue", request([*WELL_FORMED, ("Expect", "100-continue")])),
        ("upgrade", request([*WELL_FORMED, ("Upgrade", "websocket")])),
        ("closes after", request([*WELL_FORMED, ("Connection", "close")])),
        ("no length", request([("Host", "gw")], b"")),
        ("no Host", request(WELL_FORMED[1:])),
        ("a header twice", request([*WELL_FORMED, ("X-Forwarded-For", "a"), ("x-forwarded-for", "b")])),
        ("signed length", request([("Host", "gw"), ("Content-Length", "+2")])),
        ("over the body limit", request([("Host", "gw"), ("Content-Length", "1001")], b"x" * 1001)),
        ("HTTP/1.0", request(WELL_FORMED, start=f"POST {PATH} HTTP/1.0")),
        ("another method", request(WELL_FORMED, start=f"PUT {PATH} HTTP/1.1")),
        ("a query", request(WELL_FORMED, start=f"POST {PATH}?x=1 HTTP/1.1")),
        ("another route", request(WELL_FORMED, start="POST /api/routine-triggers/public/abc/fire HTTP/1.1")),
        ("obs-fold", request(WELL_FORMED).replace(b"Content-Type:", b"X-A: a\r\n b\r\nContent-Type:")),
        ("bare LF", request(WELL_FORMED).replace(b"\r\nContent-Type", b"\nContent-Type")),
        ("space before colon", request(WELL_FORMED).replace(b"Host:", b"Host :")),
        ("non-ASCII value", request([*WELL_FORMED, ("X-A", "é")])),
        ("control byte", request([*WELL_FORMED, ("X-A", "a\x7fb")])),
        ("whitespace after a value", request([*WELL_FORMED, ("X-A", "a \t")])),
        ("head too long", request([*WELL_FORMED, ("X-Pad", "a" * MAX_HEAD)])),
        ("more headers than aiohttp takes", request([*WELL_FORMED, *((f"X-{i}", "a") for i in range(130))])),
    ],
)
def test_anything_unusual_is_left_to_aiohttp(why: str, data: bytes) -> None:
    assert take_request(data, ROUTE) is None, why


def test_an_answer_has_the_headers_aiohttp_would_send() -> None:
    answer = encode_answer(JsonAnswer(429, b'{"error": "x"}', {"Retry-After": "3"}))
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 429 Too Many Requests"
    fields = dict(line.split(b": ", 1) for line in lines[1:])
    assert fields[b"Content-Type"] == b"application/json; charset=utf-8"
    assert fields[b"Content-Length"] == str(len(body)).encode()
    assert fields[b"Server"] == b"routines" and fields[b"Retry-After"] == b"3"
    assert re.fullmatch(rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", fields[b"Date"])
    assert b"Connection" not in fields
    closing = encode_answer(JsonAnswer(408, b"{}", close=True))
    assert b"\r\nConnection: close\r\n\r\n" in closing
