"""When a trigger may fire, as one rule (used by the API, gateway, scheduler and simulator)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.cron import next_fire
from shared.rules import can_fire, next_run_at, why_not_fire
from shared.vocabulary import ROUTINE_STATUSES, TRIGGER_KINDS

NOW = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("status", ROUTINE_STATUSES)
@pytest.mark.parametrize("enabled", [True, False])
def test_only_an_enabled_trigger_of_an_active_routine_fires(enabled: bool, status: str) -> None:
    assert can_fire(enabled, status) == (enabled and status == "active")
    reason = why_not_fire(enabled, status)
    if can_fire(enabled, status):
        assert reason is None
    else:
        assert reason == ("trigger disabled" if not enabled else f"routine is {status}")


@pytest.mark.parametrize("kind", TRIGGER_KINDS)
@pytest.mark.parametrize("status", ROUTINE_STATUSES)
@pytest.mark.parametrize("enabled", [True, False])
def test_next_run_at_is_parked_unless_a_schedule_can_fire(kind: str, status: str, enabled: bool) -> None:
    got = next_run_at(kind, enabled, status, "0 2 * * *", "Europe/Amsterdam", NOW)
    if kind == "schedule" and enabled and status == "active":
        assert got == next_fire("0 2 * * *", "Europe/Amsterdam", NOW)
    else:
        assert got is None


def test_a_schedule_without_expression_or_zone_is_parked() -> None:
    assert next_run_at("schedule", True, "active", None, "UTC", NOW) is None
    assert next_run_at("schedule", True, "active", "* * * * *", None, NOW) is None
