"""What the HTTP server says below the application: its banner, and its own parser's errors."""

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


def install_protocol_errors() -> None:
    """Make the server's own error answers JSON (process-wide; idempotent)."""
    web_protocol.RequestHandler.handle_error = _protocol_error  # type: ignore[method-assign]
