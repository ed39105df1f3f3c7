"""Which slots of a due trigger fire, under the misfire grace and the catch-up policy (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.cron import fires_between, iso_utc, next_fire, parse_cron, zone

ENQUEUE_CAP = 25
# Bound the work of counting missed slots after a very long outage (e.g. `* * * * *` for months).
MAX_SLOTS_COUNTED = 10_000


@dataclass(frozen=True)
class FirePlan:
    """Slots to enqueue now, slots dropped by the policy, and where the trigger goes next."""

    enqueue: list[datetime]
    missed_enqueued: int
    dropped: list[datetime] = field(default_factory=list)
    dropped_at_least: bool = False
    next_run_at: datetime | None = None

    def audit(self, policy: str) -> tuple[dict[str, object], str] | None:
        """The payload and reason of the one `skipped` run recording the dropped slots, if any."""
        if not self.dropped:
            return None
        count = f"at least {len(self.dropped)}" if self.dropped_at_least else str(len(self.dropped))
        first, last = iso_utc(self.dropped[0]), iso_utc(self.dropped[-1])
        payload: dict[str, object] = {
            "missedSlots": {
                "count": len(self.dropped),
                "atLeast": self.dropped_at_least,
                "from": first,
                "to": last,
                "catchUpPolicy": policy,
            }
        }
        reason = f"{count} missed slot(s) between {first} and {last} dropped ({policy})"
        return payload, reason


def plan_fires(
    cron_expression: str,
    timezone: str,
    next_run_at: datetime,
    now: datetime,
    misfire_grace: timedelta,
    catch_up_policy: str,
) -> FirePlan:
    """Slots from `next_run_at` (a fire instant) up to `now`: on time within the grace, else missed."""
    schedule, tz = parse_cron(cron_expression), zone(timezone)
    following = next_fire(schedule, tz, next_run_at)
    if following > now:  # the usual case: exactly one slot is due
        in_grace = now - next_run_at <= misfire_grace
        if in_grace or catch_up_policy == "enqueue_missed_with_cap":
            return FirePlan([next_run_at], 0 if in_grace else 1, [], False, following)
        return FirePlan([], 0, [next_run_at], False, following)
    slots = [next_run_at, *fires_between(schedule, tz, next_run_at, now, limit=MAX_SLOTS_COUNTED)]
    truncated = len(slots) > MAX_SLOTS_COUNTED
    if truncated:
        # Too many to count: keep the counted ones as dropped, and look again near `now` for the
        # on-time slots and the most recent missed ones (a day has at most ~1,500 slots). If that
        # window reaches back to the counted slots, nothing was skipped and the count is exact.
        counted, window = slots, timedelta(days=1)
        while True:
            start = max(counted[-1], now - misfire_grace - window)
            tail = list(fires_between(schedule, tz, start, now, limit=MAX_SLOTS_COUNTED))
            if start == counted[-1]:
                truncated = len(tail) >= MAX_SLOTS_COUNTED
                break
            if sum(now - s > misfire_grace for s in tail) > ENQUEUE_CAP:
                break
            window *= 2
        slots = [*counted, *tail]
    on_time = [s for s in slots if now - s <= misfire_grace]
    missed = [s for s in slots if now - s > misfire_grace]
    if catch_up_policy == "enqueue_missed_with_cap":
        kept, dropped = missed[-ENQUEUE_CAP:], missed[:-ENQUEUE_CAP]
    else:
        kept, dropped = [], missed
    return FirePlan(
        enqueue=[*kept, *on_time],
        missed_enqueued=len(kept),
        dropped=dropped,
        dropped_at_least=truncated,
        next_run_at=next_fire(schedule, tz, max(now, slots[-1])),
    )
