"""What a trigger becomes when patched: the rules without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from routines_api.models import TriggerUpdate
from routines_api.patches import check_fields_fit_kind, normalized_schedule, patched_trigger
from shared.errors import BadRequest, Unprocessable

NOW = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)  # a Monday
PARKED_AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def schedule(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "schedule",
        "label": "mornings",
        "enabled": True,
        "cron_expression": "0 9 * * 1-5",
        "timezone": "UTC",
        "next_run_at": PARKED_AT,
        "signing_mode": None,
        "replay_window_sec": None,
        "routine_status": "active",
        **overrides,
    }


def webhook(**overrides: Any) -> dict[str, Any]:
    return {
        **schedule(cron_expression=None, timezone=None, next_run_at=None),
        "kind": "webhook",
        "signing_mode": "bearer",
        "replay_window_sec": 300,
        **overrides,
    }


def patch(**fields: Any) -> TriggerUpdate:
    return TriggerUpdate.model_validate(fields)


def test_an_unchanged_schedule_keeps_its_next_fire() -> None:
    assert patched_trigger(schedule(), patch(label="renamed"), NOW) == {
        **{k: v for k, v in schedule().items() if k not in ("kind", "routine_status")},
        "label": "renamed",
    }


def test_a_new_expression_is_normalised_and_its_next_fire_computed_from_now() -> None:
    after = patched_trigger(schedule(), patch(cronExpression="30  10 * * MON-FRI"), NOW)
    assert after["cron_expression"] == "30 10 * * MON-FRI"  # whitespace normalised
    assert after["next_run_at"] == datetime(2026, 3, 2, 10, 30, tzinfo=UTC)


def test_a_new_zone_moves_the_next_fire() -> None:
    after = patched_trigger(schedule(), patch(timezone="Europe/Amsterdam"), NOW)
    assert after["timezone"] == "Europe/Amsterdam"
    assert after["next_run_at"] == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)  # 09:00 CET tomorrow


def test_disabling_parks_the_schedule_and_enabling_recomputes_from_now() -> None:
    assert patched_trigger(schedule(), patch(enabled=False), NOW)["next_run_at"] is None
    later = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    resumed = patched_trigger(schedule(enabled=False, next_run_at=None), patch(enabled=True), later)
    assert resumed["next_run_at"] == datetime(2026, 3, 5, 9, 0, tzinfo=UTC)  # no burst of missed slots


def test_a_label_may_be_cleared_but_other_fields_cannot_be_null() -> None:
    assert patched_trigger(schedule(), patch(label=None), NOW)["label"] is None
    for field in ("enabled", "cronExpression", "timezone"):
        with pytest.raises(
            BadRequest, match=f"^{field} cannot be null$"
        ) as refused:  # as the caller wrote it
            patched_trigger(schedule(), patch(**{field: None}), NOW)
        assert refused.value.details == [{"field": field, "message": "cannot be null"}]


def test_a_trigger_keeps_its_kind() -> None:
    with pytest.raises(BadRequest, match="kind cannot change"):
        patched_trigger(schedule(), patch(kind="webhook"), NOW)
    assert patched_trigger(schedule(), patch(kind="schedule"), NOW)["next_run_at"] == PARKED_AT


def test_fields_of_another_kind_are_refused() -> None:
    with pytest.raises(BadRequest, match="webhook triggers take no cronExpression"):
        patched_trigger(webhook(), patch(cronExpression="* * * * *"), NOW)
    with pytest.raises(BadRequest, match="schedule triggers take no signingMode"):
        patched_trigger(schedule(), patch(signingMode="hmac_sha256"), NOW)
    with pytest.raises(BadRequest, match="api triggers take no signingMode"):
        check_fields_fit_kind("api", {"signing_mode"})
    check_fields_fit_kind("api", {"label", "enabled"})


def test_a_webhook_patch_changes_only_its_own_fields() -> None:
    after = patched_trigger(webhook(), patch(signingMode="github_hmac", replayWindowSec=600), NOW)
    assert (after["signing_mode"], after["replay_window_sec"], after["next_run_at"]) == (
        "github_hmac",
        600,
        None,
    )


def test_a_bad_schedule_is_a_422_naming_the_field() -> None:
    with pytest.raises(Unprocessable, match="hour field: 25 is out of range 0-23"):
        patched_trigger(schedule(), patch(cronExpression="0 25 * * *"), NOW)
    with pytest.raises(Unprocessable, match="cronExpression is required"):
        normalized_schedule(None, "UTC")
    assert normalized_schedule("@daily", None) == ("0 0 * * *", "UTC")
