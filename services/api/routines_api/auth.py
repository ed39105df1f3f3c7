"""Bearer-token authentication and the authorization rules of DESIGN.md."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from routines_api.console.sessions import SESSION_COOKIE, authenticate_session
from routines_api.sql import QUERIES
from shared.crypto import hash_token
from shared.errors import Forbidden, NotFound, Unauthorized
from shared.http import DB_KEY

PrincipalKind = Literal["instance_admin", "board", "agent"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an instance admin, a board operator of one company, or an agent."""

    kind: PrincipalKind
    token_id: uuid.UUID
    company_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "instance_admin"

    def can_see(self, company_id: uuid.UUID) -> bool:
        """Members see their own company; the instance admin sees all."""
        return self.is_admin or self.company_id == company_id

    def require_company(self, company_id: uuid.UUID) -> None:
        """A company path the caller has no access to → 403."""
        if not self.can_see(company_id):
            raise Forbidden("no access to this company")

    def require_board(self, company_id: uuid.UUID) -> None:
        """Board operators (and the instance admin) only."""
        self.require_company(company_id)
        if self.kind == "agent":
            raise Forbidden("agents cannot do this; a board token is needed")

    def require_visible(self, company_id: uuid.UUID, what: str) -> None:
        """Another company's resource by id → 404: existence is not revealed."""
        if not self.can_see(company_id):
            raise NotFound(f"{what} not found")

    def require_manage_routine(self, assignee_agent_id: uuid.UUID) -> None:
        """Agents manage only routines assigned to themselves."""
        if self.kind == "agent" and assignee_agent_id != self.agent_id:
            raise Forbidden("agents can only manage routines assigned to themselves")


PRINCIPAL_KEY = web.RequestKey("principal", Principal)


async def authenticate(request: web.Request) -> Principal:
    """Who is calling (once per request; the route table resolves it before the handler runs), or
    401. From the `Authorization: Bearer` token, or the board console's session cookie."""
    if PRINCIPAL_KEY in request:
        return request[PRINCIPAL_KEY]
    principal = await _resolve(request)
    request[PRINCIPAL_KEY] = principal
    return principal


def principal_of(request: web.Request) -> Principal:
    """The caller, as the route table authenticated them before the handler ran. Only routes
    marked `auth=True` have one; asking on any other route is a programming error, not a 401."""
    try:
        return request[PRINCIPAL_KEY]
    except KeyError:
        raise RuntimeError(
            f"{request.method} {request.path}: no principal; the route is not marked auth=True"
        ) from None


async def _resolve(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    if not header and SESSION_COOKIE in request.cookies:
        session = await authenticate_session(request)
        return Principal(session["kind"], session["token_id"], session["company_id"], session["agent_id"])
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 200:
        raise Unauthorized("missing or malformed bearer token")
    async with request.app[DB_KEY].connection() as conn:
        row = await conn.fetchrow(QUERIES["principal_by_token"], hash_token(token))
    if row is None:
        raise Unauthorized("invalid token")
    if row["kind"] == "agent" and row["agent_status"] == "terminated":
        raise Unauthorized("agent terminated")
    return Principal(row["kind"], row["token_id"], row["company_id"], row["agent_id"])


def path_uuid(request: web.Request, name: str, what: str) -> uuid.UUID:
    """A UUID from the path; anything else cannot exist → 404."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise NotFound(f"{what} not found") from None
