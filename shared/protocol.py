"""What the HTTP server does below the application: its banner, its own parser's errors, and
clients that half-close."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web, web_protocol
from aiohttp.web_request import BaseRequest

from shared.logging import get_logger

log = get_logger(__name__)

SERVER_HEADER = "routines"
"""Sent instead of aiohttp's `Python/x.y aiohttp/x.y.z`: versions help only an attacker."""


async def hide_server_banner(_request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every application answer names no software versions, and an error
    aiohttp answers itself, past the middleware (an `Expect:` it does not know → 417), still
    comes in the JSON error shape rather than as plain text."""
    response.headers[hdrs.SERVER] = SERVER_HEADER
    if (
        isinstance(response, web.HTTPException)
        and response.status >= 400
        and response.content_type == "text/plain"
    ):
        body = json.dumps({"error": response.text or response.reason, "details": None}).encode()
        response.body = body
        response.content_type = "application/json"
        response.headers[hdrs.CONTENT_LENGTH] = str(len(body))  # counted before this hook ran


def _protocol_error(
    self: web_protocol.RequestHandler,
    request: BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """aiohttp's answer to requests its parser rejects (bad request line, bad header, TLS on a
    plain port) and to failures outside the app: the JSON error shape, and neither the offending
    bytes (which may hold credentials) nor a traceback, in the answer or the log."""
    log.info("http protocol error", status=status, error=type(exc).__name__ if exc else None)
    if request.writer.output_size > 0:
        raise ConnectionError("response already started; cannot send an error")
    if status >= 500:
        text = "internal error"
    else:
        try:
            text = f"malformed HTTP request ({HTTPStatus(status).phrase})"
        except ValueError:
            text = "malformed HTTP request"
    response = web.json_response(
        {"error": text, "details": None}, status=status, headers={hdrs.SERVER: SERVER_HEADER}
    )
    response.force_close()
    return response


def answer_half_closed(self: web_protocol.RequestHandler) -> bool:
    """The client shut down its side of the connection (a FIN: nothing more will come). asyncio
    closes the transport unless this returns True, and aiohttp's own version closed it even when
    a whole request had arrived: the handler still ran — a webhook's run was recorded — and its
    answer went nowhere, so the sender retried and made a second run. A client that writes its
    request and then half-closes (HTTP/1.0-style scripts, `nc -N`) is legitimate: the request
    being handled (or, if none is yet, the next one received) is answered, then the connection
    closed; requests pipelined behind it are not handled. An idle connection, or one whose
    request to answer lacks part of its body, is closed at once, as before (the handler's read
    fails; nothing is stored)."""
    if self._force_close or self._upgraded or self._payload_parser is not None:
        return False
    waiting_for_a_request = self._waiter is not None and not self._waiter.done()
    if not self._messages and (self._request_count == 0 or waiting_for_a_request):
        return False  # idle: nothing to answer
    if self._close:  # already answering what it will (uvloop may report the FIN twice)
        return True
    current = self._current_request
    if current is not None and not current.content.is_eof():
        return False  # the body of the request being handled was cut short
    self.close()  # answer it, then close
    if current is None:  # which request is answered is known only once its handling begins
        self._loop.call_soon(_close_if_cut_short, self, [payload for _, payload in self._messages])
    return True


def _close_if_cut_short(handler: web_protocol.RequestHandler, queued: list[Any]) -> None:
    """A loop turn after a FIN that came while no request was being handled, with the payloads
    of the requests queued then: the request now being handled (or, if its handling has not
    begun, the last taken from the queue since, or else the next in it) is the one that will be
    answered. If it lacks part of its body, close the connection as aiohttp did on the FIN.
    (uvloop can report a request and the FIN in one read, before the server takes the request
    from its queue; and the handling of a request taken from the queue begins a turn later.)"""
    if handler.transport is None:
        return
    if handler._current_request is not None:
        answering = handler._current_request.content
    else:
        still_queued = [payload for _, payload in handler._messages]
        taken = [payload for payload in queued if not any(payload is q for q in still_queued)]
        if taken:
            answering = taken[-1]
        elif still_queued:
            answering = still_queued[0]
        else:
            return  # answered already, or being answered
    if not answering.is_eof():
        handler.transport.close()


def install_protocol_handling() -> None:
    """Make the server's own error answers JSON and answer clients that half-close after their
    request (process-wide; idempotent)."""
    web_protocol.RequestHandler.handle_error = _protocol_error  # type: ignore[method-assign]
    web_protocol.RequestHandler.eof_received = answer_half_closed  # type: ignore[assignment,method-assign]
