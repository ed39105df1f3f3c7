"""Cron through the API: preview and `nextRunAt` agree with cron, bad input is a 422 that says why."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from shared.cron import iso_utc
from tests.integration import api_client
from tests.integration.api_client import Client, World, call, make_routine
from tests.unit.cron_vectors import SPRING_FORWARD_GAP


async def _preview(client: Client, world: World, status: int, **body: Any) -> Any:
    return await call(client, "POST", "/api/cron/preview", world.a.agent_key, body, status)


async def _routine_with_schedule(
    client: Client, world: World, cron: str, timezone: str, status: int = 201
) -> tuple[dict[str, Any], Any]:
    """A new routine of tenant A, and the API's answer to adding a schedule trigger to it."""
    routine = await make_routine(client, world.a)
    trigger = await api_client.make_trigger(
        client,
        world.a,
        routine["id"],
        {"kind": "schedule", "cronExpression": cron, "timezone": timezone},
        status,
    )
    return routine, trigger


async def test_single_value_range_previews_and_schedules_that_value(client: Client, world: World) -> None:
    got = await _preview(
        client, world, 200, cronExpression="0 9-9 * * *", after="2026-11-30T00:00:00Z", count=2
    )
    assert [f["utc"] for f in got["fires"]] == ["2026-11-30T09:00:00Z", "2026-12-01T09:00:00Z"]
    _, trigger = await _routine_with_schedule(client, world, "57-57 * * * *", "UTC")
    assert trigger["nextRunAt"].endswith(":57:00Z")


async def test_reversed_range_is_a_422_naming_the_field(client: Client, world: World) -> None:
    got = await _preview(client, world, 422, cronExpression="5-1 * * * *")
    assert "minute field: range 5-1 is reversed" in got["error"]


@pytest.mark.parametrize("after", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:00Z", "1969-12-31T23:59:59Z"])
async def test_preview_after_out_of_bounds_is_a_422_not_a_500(
    client: Client, world: World, after: str
) -> None:
    got = await _preview(client, world, 422, cronExpression="0 0 29 2 *", after=after, count=100)
    assert "after must be between 1970" in got["error"]


async def test_preview_and_schedule_triggers_say_the_schedule_in_words(client: Client, world: World) -> None:
    got = await _preview(
        client,
        world,
        200,
        cronExpression="30 2 * * mon-fri",
        timezone="Europe/Amsterdam",
        after="2027-03-27T12:00:00Z",
        count=2,
    )
    assert got["description"] == "At 02:30, Monday through Friday (Europe/Amsterdam)"
    assert got["fires"][0]["dst"] is None  # 2027-03-28 is a Sunday: the gap day does not match
    routine, created = await _routine_with_schedule(client, world, "0 9 * * 1-5", "Europe/Amsterdam")
    assert created["description"] == "At 09:00, Monday through Friday (Europe/Amsterdam)"
    updated = await api_client.patch_trigger(
        client, world.a, created["id"], {"cronExpression": "@hourly", "timezone": "UTC"}
    )
    assert updated["description"] == "Every hour (UTC)"
    detail = await call(client, "GET", f"/api/routines/{routine['id']}", world.a.board, status=200)
    assert [t["description"] for t in detail["triggers"]] == ["Every hour (UTC)"]
    api = await api_client.make_trigger(client, world.a, routine["id"], {"kind": "api"})
    assert api["description"] is None


async def test_preview_marks_fires_moved_by_daylight_saving(client: Client, world: World) -> None:
    vector = SPRING_FORWARD_GAP
    got = await _preview(
        client,
        world,
        200,
        cronExpression=vector.expression,
        timezone=vector.timezone,
        after=iso_utc(vector.after),
        count=1,
    )
    assert got["fires"] == [vector.first_fire]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Europe/Amsterdamm", "unknown time zone 'Europe/Amsterdamm'; did you mean Europe/Amsterdam?"),
        ("localtime", "time zone 'localtime' depends on the host"),
        ("posixrules", "time zone 'posixrules' depends on the host"),
        ("Factory", "time zone 'Factory' depends on the host"),
        ("posix/Europe/Amsterdam", "depends on the host"),
        ("right/UTC", "depends on the host"),
    ],
)
async def test_host_dependent_and_unknown_zones_are_a_422(
    client: Client, world: World, name: str, message: str
) -> None:
    got = await _preview(client, world, 422, cronExpression="0 9 * * *", timezone=name)
    assert message in got["error"]
    _, refused = await _routine_with_schedule(client, world, "0 9 * * *", name, status=422)
    assert message in refused["error"]


async def test_a_schedule_stored_before_the_strict_grammar_still_lists(
    client: Client, world: World, db: asyncpg.Connection
) -> None:
    """A reversed range was accepted before issue 12; reading its routine must not become a 422."""
    routine = await make_routine(client, world.a)
    await db.execute(
        "INSERT INTO routine_triggers (routine_id, company_id, kind, cron_expression, timezone)"
        " VALUES ($1, $2, 'schedule', '5-1 * * * *', 'UTC')",
        uuid.UUID(routine["id"]),
        uuid.UUID(world.a.company_id),
    )
    detail = await call(client, "GET", f"/api/routines/{routine['id']}", world.a.board, status=200)
    assert [(t["cronExpression"], t["description"]) for t in detail["triggers"]] == [("5-1 * * * *", None)]
