-- claim_due_triggers --
-- Claim schedule triggers due by $1 (and after $3: a slot prepared ahead takes only those not yet
-- due); the partial index routine_triggers_due makes this O(due).
-- NO KEY UPDATE: replicas still skip each other's claims, but a run recorded meanwhile for one
-- of these triggers (a manual run naming it; its foreign key takes FOR KEY SHARE) never waits.
SELECT t.id, t.routine_id, t.company_id, t.cron_expression, t.timezone, t.next_run_at,
       r.catch_up_policy, r.status AS routine_status
FROM routine_triggers t
JOIN routines r ON r.id = t.routine_id
WHERE t.kind = 'schedule' AND t.enabled AND t.next_run_at IS NOT NULL
  AND t.next_run_at <= $1 AND t.next_run_at > $3
ORDER BY t.next_run_at
LIMIT $2
FOR NO KEY UPDATE OF t SKIP LOCKED;

-- insert_schedule_runs --
-- One received run per slot; a slot that already has a run is left alone.
-- A slot recorded ahead of time (prepared; committed at the slot) is triggered at the slot.
INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, scheduled_for, triggered_at, payload)
SELECT u.routine_id, u.company_id, u.trigger_id, 'schedule', u.scheduled_for,
       GREATEST(now(), u.scheduled_for), jsonb_build_object('scheduledFor', u.scheduled_for)
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[])
     AS u(routine_id, company_id, trigger_id, scheduled_for)
-- A slot with a committed run is skipped by the snapshot, so the unique index never makes the
-- tick wait for a dispatcher deciding that run (ingest never waits on a decision).
WHERE NOT EXISTS (SELECT 1 FROM routine_runs r
                  WHERE r.trigger_id = u.trigger_id AND r.scheduled_for = u.scheduled_for)
ON CONFLICT (trigger_id, scheduled_for) DO NOTHING
RETURNING id, routine_id, scheduled_for, triggered_at;

-- insert_missed_audit --
-- One skipped run per trigger recording how many missed slots were dropped, and when.
INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, status, payload, failure_reason,
                          decided_at)
SELECT u.routine_id, u.company_id, u.trigger_id, 'schedule', 'skipped', u.payload, u.reason, now()
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::jsonb[], $5::text[])
     AS u(routine_id, company_id, trigger_id, payload, reason);

-- advance_triggers --
-- Move claimed triggers to their next slot.
UPDATE routine_triggers AS t
SET next_run_at = u.next_run_at, last_fired_at = u.fired_at
FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS u(id, next_run_at, fired_at)
WHERE t.id = u.id;

-- earliest_slot --
-- The earliest slot and the seconds from the database clock to it (negative: overdue; NULLs:
-- nothing scheduled).
SELECT min(next_run_at) AS slot,
       EXTRACT(EPOCH FROM min(next_run_at) - clock_timestamp())::float8 AS until
FROM routine_triggers
WHERE kind = 'schedule' AND enabled AND next_run_at IS NOT NULL;

-- due_backlog --
-- How many schedule triggers are due now (a gauge).
SELECT count(*) FROM routine_triggers
WHERE kind = 'schedule' AND enabled AND next_run_at IS NOT NULL AND next_run_at <= now();

-- hold_slot --
-- A transaction preparing a slot: its own idle-in-transaction and statement timeouts (local to
-- the transaction, so also behind a pooler that passes none of the service's), and the clock.
SELECT set_config('idle_in_transaction_session_timeout', $1, true),
       set_config('statement_timeout', $2, true),
       clock_timestamp() AS now;

-- wait_for_slot --
-- Sleep until the slot on the database's clock (at most $2 seconds, should the clock step).
SELECT pg_sleep(LEAST($2::float8, GREATEST(0, EXTRACT(EPOCH FROM $1::timestamptz - clock_timestamp()))::float8));

-- lock_timeout --
-- How long the statements after it (to the end of the savepoint or transaction) wait for a lock.
SELECT set_config('lock_timeout', $1, true);
