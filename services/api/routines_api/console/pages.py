"""The board console: server-rendered pages under /console/, same origin as the API.

Pages are Jinja2 templates; data comes from the JSON API itself (authenticated by the session
cookie plus a CSRF header), so the console has no rules or queries of its own to drift.
Every asset is served from this package with cache headers and a strict Content-Security-Policy.
"""

from __future__ import annotations

import hashlib
import secrets
import zoneinfo
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from routines_api.console.sessions import (
    SESSION_COOKIE,
    authenticate_session,
    close_session,
    is_https,
    open_session,
    session_row,
    set_session_cookie,
)
from routines_api.sql import QUERIES
from shared.crypto import constant_time_equals, hash_token
from shared.http import DB_KEY, SETTINGS_KEY, read_within_body_timeout

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
LOGIN_CSRF_COOKIE = "routines_console_login"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _secured(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    _secured(response)
    return response


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def _ttl(request: web.Request) -> float:
    return float(getattr(request.app[SETTINGS_KEY], "console_session_ttl_sec", 8 * 3600))


async def login_page(request: web.Request) -> web.Response:
    csrf = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    # No message from the query string: a link could otherwise put any text (a phishing line) on
    # the sign-in page. The page's own errors come from the form's answers below.
    response = _render(request, "login.html", {"csrf": csrf, "error": None})
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
        path="/console/",
    )
    return response


async def _form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField]:
    """The posted form, under the body timeout every JSON body has."""
    return await read_within_body_timeout(request, request.post())


async def login(request: web.Request) -> web.Response:
    form = await _form(request)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    offered = str(form.get("csrf", ""))
    if not expected or not constant_time_equals(expected, offered):
        context = {"csrf": expected, "error": "The form expired; try again."}
        return _render(request, "login.html", context, 403)
    token = str(form.get("token", "")).strip()
    row = None
    if token and len(token) <= 200:
        async with request.app[DB_KEY].connection() as conn:
            row = await conn.fetchrow(QUERIES["principal_by_token"], hash_token(token))
    if row is None or row["kind"] == "agent":
        message = (
            "Agent keys cannot sign in to the console; use a board token."
            if row is not None
            else "That token is not valid (or was revoked)."
        )
        return _render(request, "login.html", {"csrf": expected, "error": message}, 401)
    session_id, _csrf = await open_session(request, row["token_id"], _ttl(request))
    response = _redirect("/console/")
    set_session_cookie(request, response, session_id, _ttl(request))
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/console/")
    return response


async def logout(request: web.Request) -> web.Response:
    form = await _form(request)
    await authenticate_session(request, form_csrf=str(form.get("csrf", "")))
    await close_session(request)
    response = _redirect("/console/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _page(template: str, title: str) -> Page:
    async def handler(request: web.Request) -> web.StreamResponse:
        row = await session_row(request)
        if row is None:
            return _redirect("/console/login")
        context = {
            "csrf": row["csrf_token"],
            "kind": row["kind"],
            "company_id": str(row["company_id"]) if row["company_id"] else "",
            "title": title,
            "match": dict(request.match_info),
            "page": template.removesuffix(".html"),
        }
        return _render(request, template, context)

    return handler


@cache
def _static(name: str) -> tuple[bytes, str]:
    data = resources.files("routines_api.console").joinpath("static", name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:16]


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or suffix not in STATIC_TYPES:
        raise web.HTTPNotFound()
    try:
        data, etag = _static(name)
    except FileNotFoundError:
        raise web.HTTPNotFound() from None
    if request.headers.get("If-None-Match") == f'"{etag}"':
        return web.Response(status=304, headers={"ETag": f'"{etag}"'})
    return web.Response(
        body=data,
        content_type=STATIC_TYPES[suffix],
        headers={
            "Cache-Control": "public, max-age=3600",
            "ETag": f'"{etag}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@cache
def _zones() -> list[str]:
    hidden = ("posix/", "right/", "Etc/", "SystemV/", "US/", "Canada/", "Mexico/", "Brazil/", "Chile/")
    host = {"localtime", "posixrules", "Factory", "GMT+0", "GMT-0", "GMT0", "Greenwich", "UCT", "Zulu"}
    zones = [z for z in zoneinfo.available_timezones() if not z.startswith(hidden) and z not in host]
    return sorted({*zones, "UTC"})


async def timezones(_request: web.Request) -> web.Response:
    return web.json_response(_zones(), headers={"Cache-Control": "public, max-age=86400"})


async def index(_request: web.Request) -> web.Response:
    return _redirect("/console/")


def setup_console(app: web.Application) -> None:
    """Mount the console on the API app."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("routines_api.console", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.router.add_get("/console", index)
    app.router.add_get("/console/login", login_page)
    app.router.add_post("/console/login", login)
    app.router.add_post("/console/logout", logout)
    app.router.add_get("/console/", _page("routines.html", "Routines"))
    app.router.add_get("/console/routines/new", _page("new.html", "New routine"))
    app.router.add_get("/console/routines/{routineId}", _page("routine.html", "Routine"))
    app.router.add_get("/console/calendar", _page("calendar.html", "Calendar"))
    app.router.add_get("/console/timezones.json", timezones)
    app.router.add_get("/console/static/{name}", static)
