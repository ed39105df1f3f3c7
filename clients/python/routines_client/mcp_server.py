"""`routines mcp`: the Routines API as Model Context Protocol tools, served over stdio.

Configure an agent with (`routines-client` instead of `routines` when this package was installed
alone, with `pip install './clients/python[mcp]'`):

    {"command": "routines", "args": ["mcp"],
     "env": {"ROUTINES_API_URL": "https://routines.example.com", "ROUTINES_TOKEN": "<agent API key>"}}

Every tool answers compact JSON; an API refusal comes back as a tool error carrying the API's
own message (what to fix), never a stack trace.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field

from routines_client import AsyncRoutinesClient
from routines_client.errors import ConnectionFailed, RoutinesAPIError

INSTRUCTIONS = """\
Routines are recurring tasks. Each time a routine fires (a cron schedule in an IANA time zone,
a signed webhook, or run_routine), a run is recorded and, unless the concurrency policy says
otherwise, an execution issue is created and assigned to the routine's agent.

Concurrency policies, applied while the routine's previous execution issue is still open:
- coalesce_if_active (default): no new issue; the fire is recorded on the open one.
- skip_if_active: no new issue; the fire is recorded as skipped.
- always_enqueue: always a new issue.
Catch-up policies for schedule slots missed while the scheduler was down:
- skip_missed (default): missed slots are dropped (one audit run records how many).
- enqueue_missed_with_cap: the newest missed slots, at most 25, are run.

Schedules: standard 5-field cron (minute hour day-of-month month day-of-week; names like MON,
JAN; ranges 1-5; steps */15; lists) in an IANA zone such as Europe/Amsterdam (never a bare
offset). Daylight saving: a fixed-time job whose local time is skipped in spring fires once right
after the gap; one whose time repeats in autumn fires once, at the first occurrence. Always
preview_cron before adding a schedule to confirm the fire times.

Run statuses: received (waiting for a decision), issue_created, coalesced, skipped, failed,
completed (its issue was done). Agents manage only routines assigned to themselves.
"""

T = TypeVar("T")

RoutineId = Annotated[str, Field(description="Routine id (UUID)")]
TriggerId = Annotated[str, Field(description="Trigger id (UUID)")]
Policy = Literal["coalesce_if_active", "skip_if_active", "always_enqueue"]
CatchUp = Literal["skip_missed", "enqueue_missed_with_cap"]
Priority = Literal["critical", "high", "medium", "low"]

ROUTINE_FIELDS = (
    "id",
    "title",
    "status",
    "concurrencyPolicy",
    "catchUpPolicy",
    "assigneeAgentId",
    "projectId",
)
TRIGGER_FIELDS = ("id", "kind", "enabled", "label", "cronExpression", "timezone", "nextRunAt", "publicId")
RUN_FIELDS = ("id", "source", "status", "triggeredAt", "scheduledFor", "linkedIssueId", "failureReason")


class ToolFailure(Exception):
    """An API refusal or an unreachable API, reported to the model as a tool error."""


def _compact(data: Any, fields: tuple[str, ...]) -> Any:
    if isinstance(data, list):
        return [_compact(item, fields) for item in data]
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json", by_alias=True)
    if isinstance(data, dict):
        return {k: data[k] for k in fields if k in data and data[k] is not None}
    return data


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def build_server(client: AsyncRoutinesClient) -> Any:
    """The MCP server with one tool per routine operation, calling the API through `client`."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server: MCPServer[Any] = MCPServer("routines", instructions=INSTRUCTIONS)

    async def call(action: Callable[[], Awaitable[T]]) -> T:
        try:
            return await action()
        except RoutinesAPIError as exc:
            details = f" Details: {json.dumps(exc.details)}" if exc.details else ""
            raise ToolError(f"{exc.status} {exc.error}.{details}") from None
        except ConnectionFailed as exc:
            raise ToolError(f"The Routines API is unreachable: {exc}") from None

    def changes(**values: Any) -> dict[str, Any]:
        """The fields an update tool was given; refused when there are none."""
        body = _drop_none(**values)
        if not body:
            raise ToolError("Nothing to change: give at least one field.")
        return body

    async def my_company(company_id: str | None) -> str:
        if company_id:
            return company_id
        return str((await call(client.agent_me)).company_id)

    @server.tool()
    async def list_routines(
        company_id: Annotated[str | None, Field(description="Company id; default: your own company")] = None,
        status: Annotated[Literal["active", "paused", "archived"] | None, Field(description="Filter")] = None,
    ) -> dict[str, Any]:
        """List the routines of a company (all of them are visible to its agents)."""
        cid = await my_company(company_id)
        routines = await call(lambda: client.list_routines(cid, status=status))
        return {"routines": _compact(routines, ROUTINE_FIELDS)}

    @server.tool()
    async def get_routine(routine_id: RoutineId) -> dict[str, Any]:
        """One routine with its triggers (schedule triggers carry nextRunAt in UTC)."""
        routine = await call(lambda: client.get_routine(routine_id))
        data = _compact(routine, (*ROUTINE_FIELDS, "description", "lastTriggeredAt"))
        data["triggers"] = _compact(routine.triggers, TRIGGER_FIELDS)
        return dict(data)

    @server.tool()
    async def create_routine(
        title: Annotated[str, Field(description="Short title; becomes the execution issue's title")],
        project_id: Annotated[str, Field(description="Project id (UUID) the issues belong to")],
        description: Annotated[str | None, Field(description="Instructions for each execution")] = None,
        assignee_agent_id: Annotated[str | None, Field(description="Default: yourself")] = None,
        priority: Priority = "medium",
        concurrency_policy: Annotated[
            Policy, Field(description="What a fire does while an issue is open")
        ] = ("coalesce_if_active"),
        catch_up_policy: Annotated[CatchUp, Field(description="What happens to missed schedule slots")] = (
            "skip_missed"
        ),
        company_id: Annotated[str | None, Field(description="Default: your own company")] = None,
    ) -> dict[str, Any]:
        """Create a routine (add triggers to make it fire)."""
        cid = await my_company(company_id)
        assignee = assignee_agent_id or str((await call(client.agent_me)).id)
        body = _drop_none(
            title=title,
            projectId=project_id,
            description=description,
            assigneeAgentId=assignee,
            priority=priority,
            concurrencyPolicy=concurrency_policy,
            catchUpPolicy=catch_up_policy,
        )
        return dict(_compact(await call(lambda: client.create_routine(cid, body)), ROUTINE_FIELDS))

    @server.tool()
    async def update_routine(
        routine_id: RoutineId,
        title: str | None = None,
        description: str | None = None,
        priority: Priority | None = None,
        status: Annotated[
            Literal["active", "paused", "archived"] | None,
            Field(description="paused stops schedules and webhooks; archived is final"),
        ] = None,
        concurrency_policy: Policy | None = None,
        catch_up_policy: CatchUp | None = None,
    ) -> dict[str, Any]:
        """Change a routine's fields; only the given ones change."""
        body = changes(
            title=title,
            description=description,
            priority=priority,
            status=status,
            concurrencyPolicy=concurrency_policy,
            catchUpPolicy=catch_up_policy,
        )
        return dict(_compact(await call(lambda: client.update_routine(routine_id, body)), ROUTINE_FIELDS))

    @server.tool()
    async def add_trigger(
        routine_id: RoutineId,
        kind: Annotated[
            Literal["schedule", "webhook", "api"],
            Field(description="schedule: cron in a zone; webhook: signed public URL; api: manual runs"),
        ],
        cron_expression: Annotated[str | None, Field(description="schedule: e.g. '0 9 * * 1-5'")] = None,
        timezone: Annotated[
            str | None, Field(description="schedule: IANA zone, e.g. 'Europe/Amsterdam'")
        ] = None,
        signing_mode: Annotated[
            Literal["bearer", "hmac_sha256", "github_hmac", "standard_webhooks"] | None,
            Field(description="webhook: how senders authenticate; default hmac_sha256"),
        ] = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """Add a trigger. A webhook's secret is in this answer only: store it now."""
        body = _drop_none(
            kind=kind,
            cronExpression=cron_expression,
            timezone=timezone,
            signingMode=signing_mode,
            label=label,
        )
        trigger = await call(lambda: client.create_trigger(routine_id, body))
        return dict(_compact(trigger, (*TRIGGER_FIELDS, "webhookUrl", "signingMode", "secret")))

    @server.tool()
    async def update_trigger(
        trigger_id: TriggerId,
        enabled: Annotated[
            bool | None, Field(description="false stops it firing; true recomputes from now")
        ] = None,
        cron_expression: str | None = None,
        timezone: str | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """Change a trigger; only the given fields change."""
        body = changes(enabled=enabled, cronExpression=cron_expression, timezone=timezone, label=label)
        return dict(_compact(await call(lambda: client.update_trigger(trigger_id, body)), TRIGGER_FIELDS))

    @server.tool()
    async def delete_trigger(trigger_id: TriggerId) -> dict[str, Any]:
        """Delete a trigger for good."""
        await call(lambda: client.delete_trigger(trigger_id))
        return {"deleted": trigger_id}

    @server.tool()
    async def preview_cron(
        cron_expression: Annotated[str, Field(description="5-field cron expression")],
        timezone: Annotated[str, Field(description="IANA zone the expression is read in")] = "UTC",
        count: Annotated[int, Field(ge=1, le=100)] = 5,
    ) -> dict[str, Any]:
        """The next fire times of a schedule (UTC and local), without creating anything."""
        body = {"cronExpression": cron_expression, "timezone": timezone, "count": count}
        preview = await call(lambda: client.cron_preview(body))
        return dict(preview.model_dump(mode="json", by_alias=True, exclude_none=True))

    @server.tool()
    async def run_routine(
        routine_id: RoutineId,
        payload: Annotated[
            dict[str, Any] | None, Field(description="JSON object carried onto the issue")
        ] = None,
        idempotency_key: Annotated[
            str | None, Field(description="Retrying with the same key returns the same run")
        ] = None,
    ) -> dict[str, Any]:
        """Fire a routine now; answers the run and, normally, the decision (issue_created etc.)."""
        body = _drop_none(payload=payload or {}, idempotencyKey=idempotency_key)
        return dict(_compact(await call(lambda: client.manual_run(routine_id, body)), RUN_FIELDS))

    @server.tool()
    async def list_runs(
        routine_id: RoutineId, limit: Annotated[int, Field(ge=1, le=500)] = 20
    ) -> dict[str, Any]:
        """A routine's runs, newest first."""
        return {"runs": _compact(await call(lambda: client.list_runs(routine_id, limit=limit)), RUN_FIELDS)}

    upcoming_method = getattr(client, "routine_upcoming", None) or getattr(
        client, "get_routine_upcoming", None
    )
    if upcoming_method is not None:

        @server.tool()
        async def upcoming_fires(
            routine_id: RoutineId, count: Annotated[int, Field(ge=1, le=100)] = 10
        ) -> Any:
            """The routine's next fires across its schedule triggers, with the predicted outcome."""
            result = await call(lambda: upcoming_method(routine_id, count=count))
            return result.model_dump(mode="json", by_alias=True) if hasattr(result, "model_dump") else result

    return server


def _installed_alone() -> bool:
    """True when this package came from `pip install ./clients/python` (distribution
    `routines-client`), not with the server package `routines` (which includes it)."""
    providers = importlib.metadata.packages_distributions().get("routines_client", [])
    return "routines-client" in providers and "routines" not in providers


def command_name() -> str:
    """The console command that runs this: `routines-client` when installed alone, else `routines`."""
    return "routines-client" if _installed_alone() else "routines"


def install_hint() -> str:
    """How to add the MCP SDK to the installation this runs from (the extras differ)."""
    if _installed_alone():
        return "pip install 'routines-client[mcp]' (from a checkout: pip install './clients/python[mcp]')"
    return "pip install 'routines[agents]' (from a checkout: pip install '.[agents]')"


def main() -> int:
    """Serve over stdio until the client closes the stream."""
    try:
        import anyio
        import mcp  # noqa: F401 - fail here, with a clear message, when the extra is missing
    except ImportError:
        print(f"{command_name()} mcp: the MCP SDK is not installed; {install_hint()}", file=sys.stderr)
        return 2
    token = os.environ.get("ROUTINES_TOKEN")
    if not token:
        print(f"{command_name()} mcp: set ROUTINES_TOKEN to the agent's API key", file=sys.stderr)
        return 2
    base = os.environ.get("ROUTINES_API_URL", "http://127.0.0.1:8080")

    async def serve() -> None:
        async with AsyncRoutinesClient(base, token) as client:
            await build_server(client).run_stdio_async()

    anyio.run(serve)
    return 0
