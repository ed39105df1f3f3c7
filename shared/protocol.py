"""What the HTTP server does below the application: its banner, its own parser's errors, and
clients that half-close."""

from __future__ import annotations

import json
from http import HTTPStatus

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


def _eof_received(self: web_protocol.RequestHandler) -> bool:
    """The client shut down its side of the connection (a FIN: nothing more will come). asyncio
    closes the transport unless this returns True, and aiohttp's own version closed it even when
    a whole request had arrived: the handler still ran — a webhook's run was recorded — and its
    answer went nowhere, so the sender retried and made a second run. A client that writes its
    request and then half-closes (HTTP/1.0-style scripts, `nc -N`) is legitimate: the connection
    now stays open to answer what arrived, and is closed after that answer. An idle connection is
    closed at once, as before, and so (a loop turn later, see `_close_if_cut_short`) is one whose
    request body the FIN cut short."""
    if self._force_close or self._upgraded or self._payload_parser is not None:
        return False
    waiting_for_a_request = self._waiter is not None and not self._waiter.done()
    if not self._messages and (self._request_count == 0 or waiting_for_a_request):
        return False  # idle: nothing to answer
    if not self._close:  # (uvloop may report the FIN twice: the second finds it closing)
        self.close()  # answer what came, then close
        self._loop.call_soon(_close_if_cut_short, self)
    return True


def _close_if_cut_short(handler: web_protocol.RequestHandler) -> None:
    """After a FIN, once the request taken from the queue is being handled (its task's first step
    runs before this): if any request received lacks part of its body, close the connection as
    aiohttp did on the FIN — the handler's read of the body fails and nothing is stored."""
    received = [payload for _, payload in handler._messages]
    if handler._current_request is not None:
        received.append(handler._current_request.content)
    if handler.transport is not None and not all(payload.is_eof() for payload in received):
        handler.transport.close()


def install_protocol_handling() -> None:
    """Make the server's own error answers JSON and answer clients that half-close after their
    request (process-wide; idempotent)."""
    web_protocol.RequestHandler.handle_error = _protocol_error  # type: ignore[method-assign]
    web_protocol.RequestHandler.eof_received = _eof_received  # type: ignore[assignment,method-assign]
