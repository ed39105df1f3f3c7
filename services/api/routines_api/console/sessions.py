"""Console sessions: a random id in an HttpOnly, SameSite=Strict cookie; only its hash is stored.

A session is as good as the board (or instance-admin) token it was opened with: revoking the
token ends it, and so do sign-out and expiry. State-changing requests authenticated by the
cookie must carry the session's CSRF token (header `X-CSRF-Token` or a `csrf` form field).
"""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
from aiohttp import web

from shared.crypto import constant_time_equals, hash_token
from shared.db import load_queries
from shared.errors import Forbidden, Unauthorized
from shared.http import DB_KEY

QUERIES = load_queries("routines_api.console")

SESSION_COOKIE = "routines_console"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_https(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


async def open_session(request: web.Request, token_id: Any, ttl_sec: float) -> tuple[str, str]:
    """Store a new session; returns (cookie value, CSRF token)."""
    session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    async with request.app[DB_KEY].connection() as conn:
        await conn.execute(QUERIES["delete_expired_sessions"])
        await conn.execute(QUERIES["insert_session"], hash_token(session_id), token_id, csrf, ttl_sec)
    return session_id, csrf


def set_session_cookie(
    request: web.Request, response: web.StreamResponse, value: str, ttl_sec: float
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=int(ttl_sec),
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
        path="/",
    )


async def close_session(request: web.Request) -> None:
    value = request.cookies.get(SESSION_COOKIE)
    if value:
        async with request.app[DB_KEY].connection() as conn:
            await conn.execute(QUERIES["delete_session"], hash_token(value))


async def session_row(request: web.Request) -> asyncpg.Record | None:
    """The live session of this request's cookie, or None."""
    value = request.cookies.get(SESSION_COOKIE, "")
    if not value or len(value) > 100:
        return None
    async with request.app[DB_KEY].connection() as conn:
        row: asyncpg.Record | None = await conn.fetchrow(QUERIES["session_principal"], hash_token(value))
    return row


async def authenticate_session(request: web.Request, form_csrf: str | None = None) -> asyncpg.Record:
    """The session behind the cookie (401 if none), CSRF-checked for state-changing methods."""
    row = await session_row(request)
    if row is None:
        raise Unauthorized("sign in to the console again (session missing or expired)")
    if request.method not in SAFE_METHODS:
        offered = request.headers.get(CSRF_HEADER) or form_csrf or ""
        if not offered or not constant_time_equals(offered, row["csrf_token"]):
            raise Forbidden("missing or wrong CSRF token")
    return row
