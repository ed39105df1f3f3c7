"""The route table: its `auth` flag is enforced, not only documented (a handler marked auth=True is
never reached without credentials, even if it forgets to authenticate), and what it documents of
an operation comes from the declaration and the handler's docstring."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from routines_api.models import RoutineCreate, RoutineOut
from routines_api.routes import Handler, RouteTable
from shared.http import SETTINGS_KEY, edge_middleware
from shared.settings import CommonSettings


async def test_an_auth_route_refuses_a_request_without_credentials_before_its_handler() -> None:
    table = RouteTable()
    routes = table.tagged("t")
    reached: list[str] = []

    @routes.get("/private")
    async def private(_request: web.Request) -> web.Response:
        """Forgets to authenticate."""
        reached.append("private")
        return web.json_response({"secret": True})

    @routes.get("/public", auth=False)
    async def public(_request: web.Request) -> web.Response:
        """Open."""
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


def test_the_docstring_is_the_summary_and_the_description() -> None:
    table = RouteTable()

    @table.tagged("routines").get("/api/routines/{routineId}", response=RoutineOut)
    async def get_thing(_request: web.Request) -> web.Response:
        """One thing, with
        its parts.

        Said over two
        lines.

        A second paragraph.
        """
        return web.json_response({})

    (op,) = table.operations
    assert (op.method, op.path, op.tag, op.operation_id) == (
        "GET",
        "/api/routines/{routineId}",
        "routines",
        "getThing",
    )
    assert op.summary == "One thing, with its parts"
    assert op.description == "Said over two lines.\n\nA second paragraph."
    assert (op.response, op.response_is_list) == (RoutineOut, False)


async def _documented(_request: web.Request) -> web.Response:
    """A documented handler."""
    return web.json_response({})


Shortcut = Callable[..., Callable[[Handler], Handler]]


@pytest.mark.parametrize(
    ("shortcut", "models", "answer", "usual_errors"),
    [
        ("list", (RoutineOut,), ("GET", 200, None, RoutineOut, True), (400, 403, 404)),
        (
            "create",
            (RoutineCreate, RoutineOut),
            ("POST", 201, RoutineCreate, RoutineOut, False),
            (403, 404, 422),
        ),
    ],
)
def test_a_shortcut_declares_its_answer_and_the_usual_refusals_unless_told_otherwise(
    shortcut: str,
    models: tuple[type[BaseModel], ...],
    answer: tuple[object, ...],
    usual_errors: tuple[int, ...],
) -> None:
    table = RouteTable()
    declare: Shortcut = getattr(table.tagged("routines"), shortcut)
    declare("/a", *models)(_documented)
    declare("/b", *models, errors=(409,))(_documented)
    usual, told = table.operations
    assert (usual.method, usual.status, usual.body, usual.response, usual.response_is_list) == answer
    assert (tuple(usual.errors), tuple(told.errors)) == (usual_errors, (409,))


def test_an_undocumented_handler_is_refused_when_it_is_declared() -> None:
    async def undocumented(_request: web.Request) -> web.Response:
        return web.json_response({})

    with pytest.raises(TypeError, match="undocumented has no docstring"):
        RouteTable().tagged("t").get("/x")(undocumented)


def test_the_api_refuses_to_start_without_docstrings_and_says_why() -> None:
    """`python -OO` strips docstrings, which document every operation: a clear refusal, not an
    API with an empty document."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-OO", "-c", "import routines_api.app"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "services/api"), str(root)])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "do not run it with -OO" in result.stderr
