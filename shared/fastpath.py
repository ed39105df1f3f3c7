"""A fast path in front of aiohttp for a service's one hot route.

aiohttp spends about 85 % of a bare handler's time in its own HTTP machinery (a request object, a
router, a middleware chain, a response object, a stream writer): a connection handler that parses a
simple request with one regular expression answers ~7 times as many on this host
(docs/benchmarks.md §10). A service with a hot route — the gateway's webhook fire — names it
(`FastRoute`), and its connections are served by `FastPathHandler`, which takes a request off the
wire itself when, and only when, all of it is plainly well formed and already here:

- `POST <path of the route> HTTP/1.1`, every header line `token: visible ASCII`, at most
  `MAX_HEAD` bytes and `MAX_HEADERS` lines of them, no header twice, no whitespace after a
  value; `Host`; `Content-Length` (digits, at most the route's body limit); no
  `Transfer-Encoding`, `Content-Encoding`, `Expect` or `Upgrade`, no `Connection` other than
  keep-alive;
- the whole body has arrived with it.

Anything else — another route or method, a header it does not take, a request still arriving in
pieces, a body too large — is handed, with every byte after it, to aiohttp's own handling on the
same connection, for good: its parser, limits, timeouts and errors are what the hardening tests
hold it to. Answers go out in the order the requests came (one request at a time per connection;
what follows waits in a bounded buffer). The keep-alive (header read) timeout, a client that
half-closes after its request, and graceful shutdown behave as in aiohttp's handling.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NamedTuple

from aiohttp import web, web_protocol
from aiohttp.helpers import rfc822_formatted_time
from multidict import CIMultiDict

from shared.logging import get_logger
from shared.protocol import SERVER_HEADER, answer_half_closed

log = get_logger(__name__)

MAX_HEAD = 8190
"""Request line and headers the fast path reads at most, so no line of them is longer than aiohttp
takes (8,190 bytes a line by default); longer ones go to aiohttp."""

MAX_HEADERS = 100
"""Header lines the fast path takes at most (aiohttp's parser refuses more than 128)."""

HOLD = 65536
"""Bytes received behind the request being answered past which reading pauses until it is (what
is not whole then goes to aiohttp, which reads the rest)."""

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# The request line and the header block, strictly: no obs-fold, no bare LF, no space before a
# colon, no control or non-ASCII byte. Linear: every header line starts with a token character.
_HEAD = re.compile(rb"POST (/[!-~]*) HTTP/1\.1\r\n((?:" + _TOKEN + rb":[\t\x20-\x7e]*\r\n)*)\r\n")
# In a block _HEAD has matched, without whitespace before a line's end: each field's name and value.
_FIELD = re.compile(r"([^:\r\n]+):[ \t]*([^\r]*)\r\n")


class FastRequest(NamedTuple):
    """A request taken by the fast path: whole, with its body."""

    path: str
    params: tuple[str, ...]  # the route pattern's groups
    headers: CIMultiDict[str]
    body: bytes
    remote: str | None


class JsonAnswer(NamedTuple):
    """A JSON answer: status, body, extra headers, and whether to close the connection after it."""

    status: int
    body: bytes
    headers: dict[str, str] | None = None
    close: bool = False


@dataclass(frozen=True, slots=True)
class FastRoute:
    """The route the fast path serves: `POST` on paths `pattern` matches whole, bodies of at most
    `max_body` bytes; `handle` answers each request and never raises."""

    pattern: re.Pattern[str]
    max_body: int
    handle: Callable[[FastRequest], Awaitable[JsonAnswer]]


FAST_ROUTE_KEY = web.AppKey("fast_route", FastRoute)


def take_request(
    data: bytes, route: FastRoute
) -> tuple[str, tuple[str, ...], CIMultiDict[str], int, int] | None:
    """The path, route groups, headers, body start and end of the request at the start of `data`
    if the fast path takes it (see the module's docstring), else None."""
    head = _HEAD.match(data, 0, MAX_HEAD)
    if head is None:
        return None
    path = head[1].decode("ascii")
    found = route.pattern.fullmatch(path)
    if found is None:
        return None
    block = head[2].decode("ascii")
    lowered = block.lower()  # (a value merely containing one of these names is left to aiohttp too)
    if (
        "transfer-encoding:" in lowered
        or "content-encoding:" in lowered
        or "expect:" in lowered
        or "upgrade:" in lowered
        or " \r\n" in block
        or "\t\r\n" in block
    ):
        return None
    fields = _FIELD.findall(block)
    if len(fields) > MAX_HEADERS or len({name.lower() for name, _ in fields}) != len(fields):
        return None  # a header twice: aiohttp refuses some (Host, Content-Length), judges others
    headers = CIMultiDict(fields)
    length = headers.get("Content-Length")
    if length is None or "Host" not in headers or not length.isdigit() or len(length) > 9:
        return None
    connection = headers.get("Connection")
    if connection is not None and connection.lower() != "keep-alive":
        return None
    start = head.end()
    end = start + int(length)
    if end - start > route.max_body or len(data) < end:
        return None
    return path, found.groups(), headers, start, end


@functools.lru_cache(maxsize=64)
def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())


def encode_answer(answer: JsonAnswer) -> bytes:
    """The bytes of a JSON answer, with the headers aiohttp would send (Date, Server, length)."""
    extra = "".join([f"{k}: {v}\r\n" for k, v in answer.headers.items()]) if answer.headers else ""
    return b"%sContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\nDate: %s\r\n%s%s%s" % (
        _status_line(answer.status),
        len(answer.body),
        rfc822_formatted_time().encode(),
        _SERVER_AND + extra.encode(),
        b"Connection: close\r\n\r\n" if answer.close else b"\r\n",
        answer.body,
    )


_SERVER_AND = b"Server: %s\r\n" % SERVER_HEADER.encode()


class FastPathHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler with the fast path in front (see the module's docstring)."""

    __slots__ = ("_answering", "_draining", "_fin", "_handed_over", "_held", "_remote", "_route", "_unread")

    def __init__(self, manager: web.Server, *, route: FastRoute, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._route = route
        self._remote: str | None = None
        self._unread = b""  # received, not yet taken: what follows the request being answered
        self._answering: asyncio.Task[None] | None = None
        self._handed_over = False  # to aiohttp, for the rest of the connection
        self._fin = False
        self._draining = False
        self._held = False  # reading paused: too much waiting behind the request being answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, list | tuple) else None if peer is None else str(peer)

    def data_received(self, data: bytes) -> None:
        if self._handed_over:
            super().data_received(data)
            return
        if self._force_close or self._close or self._draining:
            return
        self._unread = self._unread + data if self._unread else data
        if self._answering is None:
            self._take_next()
        if len(self._unread) > HOLD and not self._held and not self._handed_over:
            assert self.transport is not None
            self.transport.pause_reading()
            self._held = True

    def _take_next(self) -> None:
        """Serve the request at the start of what was received, or hand the rest to aiohttp."""
        taken = take_request(self._unread, self._route)
        if taken is None:
            self._hand_over()
            return
        path, params, headers, start, end = taken
        request = FastRequest(path, params, headers, self._unread[start:end], self._remote)
        self._unread = self._unread[end:]
        self._answering = self._loop.create_task(self._answer(request))

    def _hand_over(self) -> None:
        self._handed_over = True
        unread, self._unread = self._unread, b""
        if self._held:
            self._held = False
            if self.transport is not None:
                self.transport.resume_reading()
        if unread:
            super().data_received(unread)

    async def _answer(self, request: FastRequest) -> None:
        try:
            answered = await self._answered(request)
        except BaseException:  # cancelled (a writer of the group commit was): nothing more here
            self._answering = None
            self.force_close()
            raise
        self._answering = None
        transport = self.transport
        if not answered or transport is None:
            return
        if self._ending():
            transport.close()
            return
        self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        if self._keepalive_handle is None and self._keepalive_timeout > 0:
            self._keepalive_handle = self._loop.call_at(
                self._next_keepalive_close_time, self._process_keepalive
            )
        if self._unread:
            self._take_next()
        if self._held and len(self._unread) <= HOLD:
            self._held = False
            transport.resume_reading()

    async def _answered(self, request: FastRequest) -> bool:
        """Answer `request`; False if the connection is gone or closing after it."""
        try:
            answer = await self._route.handle(request)
        except Exception:  # a defect: `handle` turns every failure into an answer
            log.exception("unhandled error on the fast path")
            answer = JsonAnswer(500, b'{"error": "internal error", "details": null}', close=True)
        transport = self.transport
        if transport is None or transport.is_closing():
            return False  # the client left: the request was still served (a run recorded stays recorded)
        transport.write(encode_answer(answer))
        if answer.close:
            transport.close()
            return False
        if self._paused and not self._ending():  # the client is not reading its answers: read
            try:  # nothing more until it does
                await self._drain_helper()
            except ConnectionError:
                return False
        return True

    def _ending(self) -> bool:
        """The connection closes after the answer being written: half-closed by the client, or
        the server is shutting down."""
        return self._fin or self._draining or self._close or self._force_close

    def _process_keepalive(self) -> None:
        if self._answering is not None:  # not idle: the deadline is set again after the answer
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio's protocol returns bool
        """The client half-closed: the request being answered still is, then the connection closes
        (what was pipelined behind it is not served, as in aiohttp's handling here)."""
        if self._handed_over:
            return answer_half_closed(self)
        if self._answering is None:
            return False  # idle: close
        self._fin = True
        return True

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        """Finish the request being answered (a fire being committed is answered), then as aiohttp."""
        self._draining = True
        if self._answering is not None:
            await asyncio.wait({self._answering}, timeout=timeout)
        await super().shutdown(timeout)


class FastPathServer(web.Server):
    """aiohttp's server making `FastPathHandler` connections for `route`."""

    def __init__(self, *args: Any, route: FastRoute, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._route = route

    def __call__(self) -> web_protocol.RequestHandler:
        return FastPathHandler(self, route=self._route, loop=self._loop, **self._kwargs)


def with_fast_route(app: web.Application, server: web.Server) -> web.Server:
    """`server` (aiohttp's, for `app`) with the app's fast route in front, if it names one."""
    route = app.get(FAST_ROUTE_KEY)
    if route is None:
        return server
    # What the fast path takes, aiohttp's parser must take too (it would refuse the same bytes).
    limits = {"max_line_size": MAX_HEAD, "max_field_size": MAX_HEAD, "max_headers": MAX_HEADERS}
    for name, ours in limits.items():
        theirs = server._kwargs.get(name, _AIOHTTP_LIMITS[name])
        if theirs < ours:
            raise ValueError(f"{name}={theirs} is below what the fast path takes ({ours})")
    return FastPathServer(
        server.request_handler,
        request_factory=server.request_factory,
        handler_cancellation=server.handler_cancellation,
        loop=server._loop,
        route=route,
        **server._kwargs,
    )


_AIOHTTP_LIMITS = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 128}  # its defaults


class ServiceRunner(web.AppRunner):
    """aiohttp's app runner; an app that names a fast route (`FAST_ROUTE_KEY`) gets it."""

    async def _make_server(self) -> web.Server:
        return with_fast_route(self.app, await super()._make_server())
