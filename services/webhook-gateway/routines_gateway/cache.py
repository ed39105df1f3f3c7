"""publicId → trigger state (with decrypted secrets), short TTL, dropped on `routines.triggers.changed`."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from routines_gateway.metrics import CACHE_LOOKUPS
from routines_gateway.sql import QUERIES
from shared.bus import Bus, Subjects
from shared.crypto import SecretBox
from shared.db import Database
from shared.errors import ServiceUnavailable
from shared.logging import get_logger

MAX_LIVE_SECRETS = 2
log = get_logger(__name__)


@dataclass(frozen=True)
class TriggerState:
    trigger_id: uuid.UUID
    routine_id: uuid.UUID
    company_id: uuid.UUID
    enabled: bool
    routine_status: str
    signing_mode: str
    replay_window_sec: int
    secrets: tuple[str, ...]
    valid_until: float  # monotonic deadline (TTL, or an old secret's grace ending)
    key: str = field(init=False)  # the trigger id as text: its rate-limit key, and in log lines
    _answer: tuple[bytes, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", str(self.trigger_id))
        # The 202 of every fire this webhook accepts is the same JSON but for the run's id.
        accepted = self.answer(_RUN_ID, "received", duplicate=False)
        head, tail = json.dumps(accepted).split(json.dumps(_RUN_ID))
        object.__setattr__(self, "_answer", (f'{head}"'.encode(), f'"{tail}'.encode()))

    def answer(self, run_id: str, status: str, *, duplicate: bool) -> dict[str, object]:
        """What a fire of this webhook is answered: its run (new, or the one an earlier delivery
        recorded)."""
        return {
            "runId": run_id,
            "status": status,
            "routineId": str(self.routine_id),
            "triggerId": self.key,
            "duplicate": duplicate,
        }

    def accepted_body(self, run_id: str) -> bytes:
        """The body of the 202 for a run just recorded (json.dumps's bytes, made without it)."""
        head, tail = self._answer
        return head + run_id.encode() + tail


_RUN_ID = "\x00run id\x00"  # a placeholder no id contains


class TriggerCache:
    def __init__(
        self,
        db: Database,
        box: SecretBox,
        ttl: float,
        max_entries: int = 50_000,
        negative_ttl: float = 5.0,
        max_missing: int = 100_000,
    ) -> None:
        self._db = db
        self._box = box
        self._ttl = ttl
        self._max = max_entries
        self._negative_ttl = negative_ttl
        self._max_missing = max_missing
        self._entries: dict[str, TriggerState] = {}
        # publicIds that named no webhook trigger, until when (monotonic): probing random ids
        # must not cost a database query each. Least recently added forgotten first.
        self._missing: OrderedDict[str, float] = OrderedDict()
        # Loads in flight (with the invalidation generation they began in): concurrent misses
        # for one publicId share a single query instead of each taking a pool connection.
        self._loading: dict[str, tuple[int, asyncio.Future[TriggerState | None]]] = {}
        self._generation = 0
        self._following = asyncio.Event()

    def known(self, public_id: str) -> bool:
        """Whether get() answers `public_id` without a query of its own (cached either way, or a
        load in flight to join)."""
        now = time.monotonic()
        cached = self._entries.get(public_id)
        if cached is not None and cached.valid_until > now:
            return True
        missing_until = self._missing.get(public_id)
        loading = self._loading.get(public_id)
        return (missing_until is not None and missing_until > now) or (
            loading is not None and loading[0] == self._generation
        )

    def fresh(self, public_id: str) -> TriggerState | None:
        """The cached state of `public_id` while it is fresh, else None (then get() it): the hit
        of nearly every fire, without a coroutine."""
        cached = self._entries.get(public_id)
        if cached is not None and cached.valid_until > time.monotonic():
            CACHE_LOOKUPS.inc("hit")
            return cached
        return None

    async def get(self, public_id: str) -> TriggerState | None:
        cached = self.fresh(public_id)
        if cached is not None:
            return cached
        now = time.monotonic()
        missing_until = self._missing.get(public_id)
        if missing_until is not None:
            if missing_until > now:
                CACHE_LOOKUPS.inc("negative_hit")
                return None
            del self._missing[public_id]
        loading = self._loading.get(public_id)
        if loading is not None and loading[0] == self._generation:
            CACHE_LOOKUPS.inc("joined")
        else:
            CACHE_LOOKUPS.inc("miss")
            loading = (self._generation, asyncio.ensure_future(self._load(public_id, self._generation)))
            self._loading[public_id] = loading
            loading[1].add_done_callback(functools.partial(self._loaded, public_id))
        # Shielded: a request that goes away must not cancel the load the others wait for.
        return await asyncio.shield(loading[1])

    def _loaded(self, public_id: str, task: asyncio.Future[TriggerState | None]) -> None:
        loading = self._loading.get(public_id)
        if loading is not None and loading[1] is task:
            del self._loading[public_id]
        if not task.cancelled():
            task.exception()  # delivered to the waiters; not "never retrieved" when they left

    async def _load(self, public_id: str, generation: int) -> TriggerState | None:
        """One database load for every request waiting on this publicId. Its answer is cached
        only if no invalidation came while it ran (it may predate the change)."""
        now = time.monotonic()
        async with self._db.connection() as conn:
            row = await conn.fetchrow(QUERIES["trigger_by_public_id"], public_id)
        current = generation == self._generation
        if row is None:
            if current and self._negative_ttl > 0:
                self._missing[public_id] = now + self._negative_ttl
                if len(self._missing) > self._max_missing:
                    self._missing.popitem(last=False)
            return None
        valid_until = now + self._ttl
        if row["secrets_expire_at"] is not None:
            # An old secret's grace ends: the cached entry must not outlive it.
            valid_until = min(valid_until, now + (row["secrets_expire_at"] - row["db_now"]).total_seconds())
        state = TriggerState(
            row["id"],
            row["routine_id"],
            row["company_id"],
            row["enabled"],
            row["routine_status"],
            row["signing_mode"],
            row["replay_window_sec"],
            # At most the current and the previous secret: a verification costs one HMAC each.
            self._secrets(row["id"], row["secrets"][:MAX_LIVE_SECRETS]),
            valid_until,
        )
        if current:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[public_id] = state
        return state

    def _secrets(self, trigger_id: uuid.UUID, blobs: list[bytes]) -> tuple[str, ...]:
        """The webhook's live secrets in the clear. One that no key of the ring opens is this
        deployment's fault, not the sender's: 503 (senders retry) and an error naming the
        trigger and the setting — never a 500 with a traceback."""
        try:
            return tuple(self._box.decrypt(blob, str(trigger_id)) for blob in blobs)
        except ValueError as exc:
            log.error(
                "webhook secret does not open with ROUTINES_SECRET_KEY; is a key missing from the ring?",
                trigger_id=str(trigger_id),
                reason=str(exc),
            )
            raise ServiceUnavailable("this webhook cannot be verified right now; retry later") from None

    def clear(self) -> None:
        """Forget everything, and let no load begun before now fill the cache or be joined."""
        self._generation += 1
        self._entries.clear()
        self._missing.clear()

    async def follow_changes(self, bus: Bus) -> None:
        """Drop everything on any trigger/routine change: rare, and correctness beats hit rate."""

        async def on_change(_msg: Msg) -> None:
            self.clear()

        await bus.wait_connected()
        await bus.subscribe(Subjects.TRIGGERS_CHANGED, on_change)
        self._following.set()

    async def wait_following(self) -> None:
        """Until invalidation messages are being received (tests; start-up ordering)."""
        await self._following.wait()
