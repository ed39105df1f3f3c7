"""`routines routine|trigger|run|runs|cron|upcoming|wakeups|mcp`: the API from a shell.

Reads `ROUTINES_API_URL` (default http://127.0.0.1:8080), `ROUTINES_GATEWAY_URL` and
`ROUTINES_TOKEN` (an agent API key or a board token; `ROUTINES_ADMIN_TOKEN` is used when
`ROUTINES_TOKEN` is unset). Prints a table by default and JSON with `--json`. Exit codes:
0 success, 1 the API refused (its message is printed), 2 usage or configuration, 3 the API
could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from routines_client import AsyncRoutinesClient
from routines_client.errors import ConnectionFailed, RoutinesAPIError

# `routines-client` when installed alone (`pip install ./clients/python`), else the server's `routines`.
PROG = "routines-client" if Path(sys.argv[0]).name == "routines-client" else "routines"
COMMANDS = ("routine", "trigger", "run", "runs", "cron", "upcoming", "wakeups", "mcp")

Handler = Callable[[AsyncRoutinesClient, argparse.Namespace], Awaitable[Any]]


class UsageError(Exception):
    """A problem with the command line or the environment."""


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))[:60]
    return str(value)


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned text table with the given columns."""
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _table_for(result: Any, columns: Sequence[str]) -> str:
    data = _plain(result)
    if isinstance(data, dict) and "items" in data:
        data = data["items"]
    if isinstance(data, list):
        return render_table(data, columns)
    if isinstance(data, dict):
        # A list of rows with the command's columns (the fires of `cron preview`, `upcoming`) is
        # a table of its own after the other fields, not one JSON cell cut at 60 characters.
        tables = {
            k: v
            for k, v in data.items()
            if columns
            and isinstance(v, list)
            and v
            and all(isinstance(row, dict) and set(columns) <= row.keys() for row in v)
        }
        fields = {k: v for k, v in data.items() if k not in tables}
        width = max((len(k) for k in fields), default=0)
        parts = ["\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in fields.items())] if fields else []
        parts += [render_table(rows, columns) for rows in tables.values()]
        return "\n".join(parts)
    return str(data)


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    raw = sys.stdin.read() if text == "-" else text
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from exc


async def _company_id(client: AsyncRoutinesClient, args: argparse.Namespace) -> str:
    company = args.company or os.environ.get("ROUTINES_COMPANY_ID")
    if company:
        return str(company)
    try:
        me = await client.agent_me()
    except RoutinesAPIError as exc:
        raise UsageError("pass --company (or set ROUTINES_COMPANY_ID): this token is not an agent's") from exc
    return str(me.company_id)


def _patch(args: argparse.Namespace, fields: dict[str, str]) -> dict[str, Any]:
    body = {api: getattr(args, attr) for attr, api in fields.items() if getattr(args, attr) is not None}
    if not body:
        raise UsageError("nothing to change: give at least one option")
    return body


ROUTINE_COLUMNS = ("id", "title", "status", "concurrencyPolicy", "lastTriggeredAt")
TRIGGER_COLUMNS = ("id", "kind", "enabled", "cronExpression", "timezone", "nextRunAt", "publicId")
RUN_COLUMNS = ("id", "source", "status", "triggeredAt", "linkedIssueId", "failureReason")
ROUTINE_FIELDS = {
    "title": "title",
    "description": "description",
    "agent": "assigneeAgentId",
    "project": "projectId",
    "goal": "goalId",
    "priority": "priority",
    "policy": "concurrencyPolicy",
    "catch_up": "catchUpPolicy",
}
TRIGGER_FIELDS = {
    "label": "label",
    "cron": "cronExpression",
    "timezone": "timezone",
    "signing_mode": "signingMode",
    "replay_window": "replayWindowSec",
}


async def routine_list(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    return await client.list_routines(await _company_id(client, args), status=args.status)


async def routine_show(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    return await client.get_routine(args.routine_id)


async def routine_create(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    body = _json_arg(args.body, "--body") or {}
    body.update({api: getattr(args, a) for a, api in ROUTINE_FIELDS.items() if getattr(args, a) is not None})
    if "assigneeAgentId" not in body:
        try:
            body["assigneeAgentId"] = str((await client.agent_me()).id)
        except RoutinesAPIError as exc:
            raise UsageError("pass --agent: this token is not an agent's") from exc
    return await client.create_routine(await _company_id(client, args), body)


async def routine_update(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    return await client.update_routine(args.routine_id, _patch(args, ROUTINE_FIELDS))


def _set_status(status: str) -> Handler:
    async def handler(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
        return await client.update_routine(args.routine_id, {"status": status})

    return handler


async def trigger_add(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"kind": args.kind}
    body.update({api: getattr(args, a) for a, api in TRIGGER_FIELDS.items() if getattr(args, a) is not None})
    return await client.create_trigger(args.routine_id, body)


async def trigger_update(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    body = {api: getattr(args, a) for a, api in TRIGGER_FIELDS.items() if getattr(args, a) is not None}
    if args.enabled is not None:
        body["enabled"] = args.enabled
    if not body:
        raise UsageError("nothing to change: give at least one option")
    return await client.update_trigger(args.trigger_id, body)


async def trigger_delete(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    await client.delete_trigger(args.trigger_id)
    return {"deleted": args.trigger_id}


async def trigger_rotate(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    return await client.rotate_secret(args.trigger_id, {"graceSec": args.grace})


async def run_now(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"payload": _json_arg(args.payload, "--payload") or {}}
    if args.idempotency_key:
        body["idempotencyKey"] = args.idempotency_key
    if args.trigger:
        body["triggerId"] = args.trigger
    return await client.manual_run(args.routine_id, body)


async def runs_list(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    runs = await client.list_runs(args.routine_id, limit=args.limit)
    if not args.follow:
        return runs
    printed = {str(run.id): run.status for run in runs}  # each run's status as last printed
    _print(args, runs, RUN_COLUMNS)
    while True:  # until interrupted: print new runs and runs whose status changed
        await asyncio.sleep(args.interval)
        fresh = await client.list_runs(args.routine_id, limit=args.limit)
        for run in reversed(fresh):
            if printed.get(str(run.id)) == run.status:
                continue
            printed[str(run.id)] = run.status
            _print(args, [run], RUN_COLUMNS, header=False)


async def cron_preview(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"cronExpression": args.expression, "timezone": args.timezone, "count": args.count}
    if args.after:
        body["after"] = args.after
    return await client.cron_preview(body)


async def upcoming(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    method = getattr(client, "routine_upcoming", None) or getattr(client, "get_routine_upcoming", None)
    if method is None:
        raise UsageError("this API has no upcoming-fires operation")
    return await method(args.routine_id, count=args.count)


async def wakeups(client: AsyncRoutinesClient, args: argparse.Namespace) -> Any:
    from routines_client.wakeups import follow_wakeups

    async for event in follow_wakeups(client.transport, last_event_id=args.last_event_id):
        print(json.dumps(event) if args.json else f"{event['id']}  {json.dumps(event['data'])}", flush=True)


def _print(args: argparse.Namespace, result: Any, columns: Sequence[str], header: bool = True) -> None:
    if args.json:
        print(json.dumps(_plain(result), indent=None if not header else 2))
        return
    text = _table_for(result, columns)
    print(text if header else "\n".join(text.splitlines()[1:]), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    groups = parser.add_subparsers(dest="group", required=True)

    def command(sub: Any, name: str, handler: Handler, columns: Sequence[str], help_text: str) -> Any:
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(handler=handler, columns=columns)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        return p

    def routine_fields(p: Any) -> None:
        p.add_argument("--title")
        p.add_argument("--description")
        p.add_argument("--agent", help="assignee agent id (default: the calling agent)")
        p.add_argument("--project", help="project id")
        p.add_argument("--goal", help="goal id")
        p.add_argument("--priority", choices=["critical", "high", "medium", "low"])
        p.add_argument(
            "--policy",
            choices=["coalesce_if_active", "skip_if_active", "always_enqueue"],
            help="what a fire does while an execution issue is open",
        )
        p.add_argument("--catch-up", choices=["skip_missed", "enqueue_missed_with_cap"])

    routine = groups.add_parser(
        "routine", help="list, show, create, update, pause, resume, archive"
    ).add_subparsers(dest="action", required=True)
    p = command(routine, "list", routine_list, ROUTINE_COLUMNS, "routines of a company")
    p.add_argument("--company", help="company id (default: the calling agent's)")
    p.add_argument("--status", choices=["active", "paused", "archived"])
    p = command(routine, "show", routine_show, ROUTINE_COLUMNS, "one routine with its triggers")
    p.add_argument("routine_id")
    p = command(routine, "create", routine_create, ROUTINE_COLUMNS, "create a routine")
    p.add_argument("--company", help="company id (default: the calling agent's)")
    p.add_argument("--body", help="JSON body (or - for stdin); options override its fields")
    routine_fields(p)
    p = command(routine, "update", routine_update, ROUTINE_COLUMNS, "change fields of a routine")
    p.add_argument("routine_id")
    routine_fields(p)
    for action, status in (("pause", "paused"), ("resume", "active"), ("archive", "archived")):
        p = command(routine, action, _set_status(status), ROUTINE_COLUMNS, f"set status {status}")
        p.add_argument("routine_id")

    trigger = groups.add_parser("trigger", help="add, update, delete, rotate").add_subparsers(
        dest="action", required=True
    )

    def trigger_fields(p: Any) -> None:
        p.add_argument("--label")
        p.add_argument("--cron", help="5-field cron expression (schedule)")
        p.add_argument("--timezone", help="IANA time zone, e.g. Europe/Amsterdam (schedule)")
        p.add_argument(
            "--signing-mode", choices=["bearer", "hmac_sha256", "github_hmac", "standard_webhooks"]
        )
        p.add_argument("--replay-window", type=int, help="seconds (webhook)")

    p = command(trigger, "add", trigger_add, TRIGGER_COLUMNS, "add a trigger to a routine")
    p.add_argument("routine_id")
    p.add_argument("--kind", choices=["schedule", "webhook", "api"], required=True)
    trigger_fields(p)
    p = command(trigger, "update", trigger_update, TRIGGER_COLUMNS, "change a trigger")
    p.add_argument("trigger_id")
    trigger_fields(p)
    p.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None)
    p.add_argument("--disable", dest="enabled", action="store_const", const=False)
    p = command(trigger, "delete", trigger_delete, (), "delete a trigger")
    p.add_argument("trigger_id")
    p = command(trigger, "rotate", trigger_rotate, (), "rotate a webhook secret (shown once)")
    p.add_argument("trigger_id")
    p.add_argument("--grace", type=int, default=0, help="seconds the old secret keeps working")

    p = command(groups, "run", run_now, RUN_COLUMNS, "run a routine now")
    p.add_argument("routine_id")
    p.add_argument("--payload", help="JSON object (or - for stdin)")
    p.add_argument("--idempotency-key", help="retries with the same key return the same run")
    p.add_argument("--trigger", help="api trigger id to attribute the run to")
    p = command(groups, "runs", runs_list, RUN_COLUMNS, "runs of a routine, newest first")
    p.add_argument("routine_id")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new runs")
    p.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    cron = groups.add_parser("cron", help="preview a cron expression").add_subparsers(
        dest="action", required=True
    )
    p = command(cron, "preview", cron_preview, ("utc", "local", "dst"), "the next fire times")
    p.add_argument("expression")
    p.add_argument("--timezone", "--tz", default="UTC")
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--after", help="ISO 8601 instant to start from")
    p = command(groups, "upcoming", upcoming, ("utc", "local", "triggerId", "predictedOutcome"), "next fires")
    p.add_argument("routine_id")
    p.add_argument("--count", type=int, default=10)
    p = command(groups, "wakeups", wakeups, (), "follow this agent's wake-ups (Server-Sent Events)")
    p.add_argument("--last-event-id", help="resume after this event id")
    p = groups.add_parser("mcp", help="serve the Model Context Protocol over stdio (for agents)")
    p.set_defaults(handler=None, columns=())
    return parser


async def _call(args: argparse.Namespace) -> Any:
    token = os.environ.get("ROUTINES_TOKEN") or os.environ.get("ROUTINES_ADMIN_TOKEN")
    if not token:
        raise UsageError("set ROUTINES_TOKEN to an agent API key or a board token")
    base = os.environ.get("ROUTINES_API_URL", "http://127.0.0.1:8080")
    async with AsyncRoutinesClient(base, token, gateway_url=os.environ.get("ROUTINES_GATEWAY_URL")) as client:
        return await args.handler(client, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.group == "mcp":
        from routines_client.mcp_server import main as serve_mcp

        return serve_mcp()
    try:
        result = asyncio.run(_call(args))
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except ConnectionFailed as exc:
        print(f"{PROG}: cannot reach the API: {exc}", file=sys.stderr)
        return 3
    except RoutinesAPIError as exc:
        detail = f" ({json.dumps(exc.details)})" if exc.details else ""
        print(f"{PROG}: {exc.status} {exc.error}{detail}", file=sys.stderr)
        return 1
    if result is not None:
        _print(args, result, args.columns)
    return 0


def _now() -> str:
    return datetime.now(UTC).isoformat()


if __name__ == "__main__":
    sys.exit(main())
