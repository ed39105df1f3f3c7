"""Cron answers checked at two layers, against shared.cron itself (tests/unit/test_cron.py) and
through the API (tests/integration/test_cron_api.py): written once, so the two cannot drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple


class PreviewVector(NamedTuple):
    """The first fire a preview of `expression` in `timezone` must give after `after`."""

    expression: str
    timezone: str
    after: datetime
    first_fire: dict[str, Any]


# Amsterdam springs forward on 2027-03-28: 02:30 does not exist, so the fire moves to 03:00.
SPRING_FORWARD_GAP = PreviewVector(
    "30 2 * * *",
    "Europe/Amsterdam",
    datetime(2027, 3, 27, 12, tzinfo=UTC),
    {
        "utc": "2027-03-28T01:00:00Z",
        "local": "2027-03-28T03:00:00+02:00",
        "dst": {
            "kind": "shifted_out_of_gap",
            "wallTime": "2027-03-28T02:30",
            "note": "02:30 does not exist on 2027-03-28 (clocks spring forward); fires at 03:00 instead",
        },
    },
)
