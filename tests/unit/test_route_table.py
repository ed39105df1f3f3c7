"""The route table's `auth` flag is enforced, not only documented: a handler marked auth=True is
never reached without credentials, even if it forgets to authenticate."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from routines_api.routes import RouteTable
from shared.http import SETTINGS_KEY, edge_middleware
from shared.settings import CommonSettings


async def test_an_auth_route_refuses_a_request_without_credentials_before_its_handler() -> None:
    table = RouteTable()
    reached: list[str] = []

    @table.route("GET", "/private", summary="forgets to authenticate", tag="t")
    async def private(_request: web.Request) -> web.Response:
        reached.append("private")
        return web.json_response({"secret": True})

    @table.route("GET", "/public", summary="open", tag="t", auth=False)
    async def public(_request: web.Request) -> web.Response:
        reached.append("public")
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[edge_middleware])
    app[SETTINGS_KEY] = CommonSettings(database_url="postgresql://unused@127.0.0.1:1/none")
    table.install(app)
    async with TestClient(TestServer(app)) as client:
        refused = await client.get("/private")
        assert refused.status == 401
        assert set(await refused.json()) == {"error", "details"}
        malformed = await client.get("/private", headers={"Authorization": "Basic abc"})
        assert malformed.status == 401
        assert (await client.get("/public")).status == 200
    assert reached == ["public"]
