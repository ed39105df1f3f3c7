"""What a trigger becomes: the rules of creating and patching one, without I/O (unit-tested in
tests/unit/test_patches.py; the handlers in triggers.py only load, call these and store)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from routines_api.answers import Row
from routines_api.models import TriggerUpdate
from shared.cron import parse_cron, zone
from shared.errors import BadRequest, Unprocessable
from shared.rules import next_run_at

SCHEDULE_FIELDS = frozenset({"cron_expression", "timezone"})
WEBHOOK_FIELDS = frozenset({"signing_mode", "replay_window_sec"})
NOT_NULL = ("enabled", "cron_expression", "timezone", "signing_mode", "replay_window_sec")


def refuse_nulls(body: BaseModel, names: Iterable[str]) -> None:
    """400 for a field given as null that cannot be, named as the caller wrote it (camelCase)."""
    for name in sorted(names):
        if getattr(body, name) is None:
            field = to_camel(name)
            raise BadRequest(f"{field} cannot be null", [{"field": field, "message": "cannot be null"}])


def check_fields_fit_kind(kind: str, given: set[str] | frozenset[str]) -> None:
    """Schedule fields only on schedule triggers, webhook fields only on webhook triggers (400)."""
    if kind != "schedule" and given & SCHEDULE_FIELDS:
        raise BadRequest(f"{kind} triggers take no cronExpression or timezone")
    if kind != "webhook" and given & WEBHOOK_FIELDS:
        raise BadRequest(f"{kind} triggers take no signingMode or replayWindowSec")


def normalized_schedule(cron: str | None, tz: str | None) -> tuple[str, str]:
    """The cron expression in its canonical form and the zone, or 422 with the parser's reason."""
    if cron is None:
        raise Unprocessable("cronExpression is required for schedule triggers")
    expression = parse_cron(cron).expression
    tz = "UTC" if tz is None else tz  # absent means UTC; an empty name is an unknown zone (422)
    zone(tz)
    return expression, tz


def patched_trigger(trigger: Row, body: TriggerUpdate, now: datetime) -> dict[str, Any]:
    """The columns of `trigger` after the PATCH `body` at `now` (400/422 for what cannot be).

    A schedule whose expression, zone or enabled flag changes gets its next fire recomputed from
    `now`: a resumed trigger does not burst with the slots it missed."""
    given = body.model_fields_set
    if body.kind is not None and body.kind != trigger["kind"]:
        raise BadRequest("a trigger's kind cannot change; delete it and add a new one")
    check_fields_fit_kind(trigger["kind"], given)
    refuse_nulls(body, given & set(NOT_NULL))
    enabled = body.enabled if body.enabled is not None else trigger["enabled"]
    # Given means given: an empty expression or zone is refused (422), not taken as "unchanged".
    cron = body.cron_expression if body.cron_expression is not None else trigger["cron_expression"]
    tz = body.timezone if body.timezone is not None else trigger["timezone"]
    next_at = trigger["next_run_at"]
    if trigger["kind"] == "schedule":
        cron, _ = normalized_schedule(cron, tz)
        if (cron, tz) != (trigger["cron_expression"], trigger["timezone"]) or enabled != trigger["enabled"]:
            next_at = next_run_at("schedule", enabled, trigger["routine_status"], cron, tz, now)
    return {
        "label": body.label if "label" in given else trigger["label"],
        "enabled": enabled,
        "cron_expression": cron,
        "timezone": tz,
        "next_run_at": next_at,
        "signing_mode": body.signing_mode or trigger["signing_mode"],
        "replay_window_sec": body.replay_window_sec or trigger["replay_window_sec"],
    }
