-- run_by_id --
-- One run.
SELECT * FROM routine_runs WHERE id = $1;

-- run_answer --
-- One run as answered: its whole payload as the text Postgres stores (never re-decoded).
SELECT r.id, r.routine_id, r.company_id, r.trigger_id, r.source, r.status, r.triggered_at,
       r.scheduled_for, r.idempotency_key, r.linked_issue_id, r.coalesced_into_run_id,
       r.failure_reason, r.decided_at, r.completed_at, r.replay_of, r.input_variables,
       r.resolved_variables, r.assignee_override, r.project_override,
       j.payload, octet_length(j.payload) AS payload_bytes
FROM routine_runs r CROSS JOIN LATERAL (SELECT r.payload::text AS payload) j
WHERE r.id = $1;

-- runs_page --
-- One page of a routine's runs, newest first, after a keyset cursor, with optional filters.
-- Payloads as the text Postgres stores (never re-decoded), left out over $10 bytes.
SELECT r.id, r.routine_id, r.company_id, r.trigger_id, r.source, r.status, r.triggered_at,
       r.scheduled_for, r.idempotency_key, r.linked_issue_id, r.coalesced_into_run_id,
       r.failure_reason, r.decided_at, r.completed_at, r.replay_of, r.input_variables,
       r.resolved_variables, r.assignee_override, r.project_override,
       CASE WHEN $10::int IS NULL OR octet_length(j.payload) <= $10 THEN j.payload END AS payload,
       octet_length(j.payload) AS payload_bytes
FROM routine_runs r CROSS JOIN LATERAL (SELECT r.payload::text AS payload) j
WHERE routine_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR source = $3)
  AND ($4::uuid IS NULL OR trigger_id = $4)
  AND ($5::timestamptz IS NULL OR triggered_at >= $5)
  AND ($6::timestamptz IS NULL OR triggered_at < $6)
  AND ($7::timestamptz IS NULL OR (triggered_at, id) < ($7, $8::uuid))
ORDER BY triggered_at DESC, id DESC
LIMIT $9;

-- insert_replay_run --
-- A replay of an earlier run: same routine and trigger, its own payload, pointing back at it.
INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, payload, replay_of,
                          input_variables)
VALUES ($1, $2, $3, 'replay', $4, $5, $6)
RETURNING *;

-- schedule_triggers_of_routine --
-- A routine's schedule triggers with what the simulator needs.
SELECT id, routine_id, label, enabled, cron_expression, timezone, next_run_at
FROM routine_triggers WHERE routine_id = $1 AND kind = 'schedule' ORDER BY created_at, id;

-- company_schedule_triggers --
-- Enabled schedule triggers of a company's active routines (optionally one agent's), with policy.
SELECT t.id, t.routine_id, t.label, t.enabled, t.cron_expression, t.timezone, t.next_run_at,
       r.status AS routine_status, r.concurrency_policy
FROM routine_triggers t JOIN routines r ON r.id = t.routine_id
WHERE t.company_id = $1 AND t.kind = 'schedule' AND t.enabled AND r.status = 'active'
  AND ($2::uuid IS NULL OR r.assignee_agent_id = $2)
ORDER BY t.id
LIMIT $3;

-- open_execution_issues --
-- The newest open execution issue of each of these routines (one index probe per routine).
SELECT r.id AS routine_id, i.id, i.origin_run_id, i.created_at, i.status
FROM unnest($1::uuid[]) AS r(id)
CROSS JOIN LATERAL (
    SELECT id, origin_run_id, created_at, status FROM issues
    WHERE origin_kind = 'routine_execution' AND origin_id = r.id
      AND status IN ('backlog', 'todo', 'in_progress', 'in_review', 'blocked')
    ORDER BY created_at DESC
    LIMIT 1
) i;

-- runs_for_slots --
-- The runs already recorded for these slots of a trigger.
SELECT id, scheduled_for FROM routine_runs WHERE trigger_id = $1 AND scheduled_for = ANY($2::timestamptz[]);

-- insert_backfill_runs --
-- One received run per missing slot; the slot uniqueness makes a concurrent backfill a no-op.
INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, scheduled_for, payload)
SELECT $1, $2, $3, 'backfill', s.slot, jsonb_build_object('scheduledFor', s.slot, 'backfill', true)
FROM unnest($4::timestamptz[]) AS s(slot)
ON CONFLICT (trigger_id, scheduled_for) DO NOTHING
RETURNING id, scheduled_for;

-- set_routine_features --
-- The routine-feature settings of one routine.
UPDATE routines
SET variables = $2, failure_alert_after = $3, auto_pause_after = $4, stale_after_sec = $5,
    stale_action = $6,
    -- A pausedReason (set by auto-pause) lasts only while the routine stays paused.
    paused_reason = CASE WHEN status = 'paused' THEN paused_reason END
WHERE id = $1 RETURNING *;

-- has_schedule_triggers --
-- Whether a routine has a schedule trigger.
SELECT EXISTS (SELECT 1 FROM routine_triggers WHERE routine_id = $1 AND kind = 'schedule');

-- latest_revision --
-- The current revision of a routine.
SELECT * FROM routine_revisions WHERE routine_id = $1 ORDER BY number DESC LIMIT 1;

-- insert_revision --
-- The next revision of a routine (the routine row is locked by the caller, so numbers never clash).
INSERT INTO routine_revisions (routine_id, company_id, number, actor_kind, actor_id, snapshot, changes,
                               restored_from)
SELECT $1, $2, COALESCE(max(number), 0) + 1, $3, $4, $5, $6, $7
FROM routine_revisions WHERE routine_id = $1
RETURNING *;

-- insert_activity --
-- One entry of a routine's activity log.
INSERT INTO routine_activity (company_id, routine_id, actor_kind, actor_id, action, details)
VALUES ($1, $2, $3, $4, $5, $6);

-- set_run_input_variables --
-- The variable values given for a run (manual run `variables`).
UPDATE routine_runs SET input_variables = $2 WHERE id = $1;

-- health_schedule_triggers --
-- A routine's schedule triggers, for the health report.
SELECT id, label, enabled, cron_expression, timezone, next_run_at, created_at
FROM routine_triggers WHERE routine_id = $1 AND kind = 'schedule' ORDER BY created_at, id;

-- health_slot_runs --
-- Per trigger: runs recorded for slots in the window, on time or late, and fire-lag percentiles.
SELECT trigger_id,
       count(*) FILTER (WHERE source = 'schedule' AND triggered_at - scheduled_for <= $4) AS on_time,
       count(*) FILTER (WHERE source = 'schedule' AND triggered_at - scheduled_for > $4) AS late,
       count(*) FILTER (WHERE source = 'backfill') AS backfilled,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM triggered_at - scheduled_for))
           FILTER (WHERE source = 'schedule') AS lag,
       max(extract(epoch FROM triggered_at - scheduled_for)) FILTER (WHERE source = 'schedule') AS lag_max
FROM routine_runs
WHERE routine_id = $1 AND trigger_id IS NOT NULL AND scheduled_for >= $2 AND scheduled_for <= $3
GROUP BY trigger_id;

-- health_missed_slots --
-- The catch-up policy's audit runs recorded in the window: how many slots each dropped, and the
-- first and last of them (a run written in the window may cover slots from before it).
SELECT trigger_id, (payload -> 'missedSlots' ->> 'count')::bigint AS dropped,
       (payload -> 'missedSlots' ->> 'from')::timestamptz AS first_slot,
       (payload -> 'missedSlots' ->> 'to')::timestamptz AS last_slot
FROM routine_runs
WHERE routine_id = $1 AND trigger_id IS NOT NULL AND source = 'schedule' AND status = 'skipped'
  AND scheduled_for IS NULL AND payload ? 'missedSlots' AND triggered_at >= $2;

-- health_status_counts --
-- Runs of the routine in the window by status.
SELECT status, count(*) AS n FROM routine_runs
WHERE routine_id = $1 AND triggered_at >= $2
GROUP BY status;

-- health_settled --
-- The routine's latest settled runs, newest first (for the failure streak).
SELECT status FROM routine_runs
WHERE routine_id = $1 AND status IN ('failed', 'completed')
ORDER BY COALESCE(completed_at, decided_at, triggered_at) DESC, id DESC
LIMIT $2;

-- revisions_page --
-- A routine's revisions, newest first, after a keyset cursor.
SELECT * FROM routine_revisions
WHERE routine_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $4;

-- revision_by_id --
-- One revision of a routine.
SELECT * FROM routine_revisions WHERE id = $1 AND routine_id = $2;

-- activity_page --
-- A routine's activity (changes, alerts, manual runs) merged with its runs, newest first.
SELECT * FROM (
    SELECT id, created_at AS at, actor_kind, actor_id, action, details
    FROM routine_activity WHERE routine_id = $1
    UNION ALL
    SELECT id, triggered_at, 'system', NULL, 'run_recorded',
           jsonb_build_object('runId', id, 'source', source, 'status', status,
                              'triggerId', trigger_id, 'linkedIssueId', linked_issue_id,
                              'failureReason', failure_reason, 'decidedAt', decided_at)
    FROM routine_runs WHERE routine_id = $1
) AS a
WHERE ($2::timestamptz IS NULL OR (a.at, a.id) < ($2, $3::uuid))
ORDER BY a.at DESC, a.id DESC
LIMIT $4;

-- company_activity_page --
-- A company's routine activity (changes, alerts, manual runs), newest first.
SELECT id, routine_id, created_at AS at, actor_kind, actor_id, action, details
FROM routine_activity
WHERE company_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $4;

-- set_last_rotated_at --
-- When a webhook trigger's secret was last rotated.
UPDATE routine_triggers SET last_rotated_at = now() WHERE id = $1;

-- latest_run_per_trigger --
-- Each trigger's latest run (lastResult, and lastFiredAt for triggers the scheduler does not stamp):
-- one index probe per trigger, not a read of its whole history.
SELECT t.id AS trigger_id, r.status, r.triggered_at
FROM unnest($1::uuid[]) AS t(id)
CROSS JOIN LATERAL (
    SELECT status, triggered_at FROM routine_runs
    WHERE trigger_id = t.id
    ORDER BY triggered_at DESC, id DESC
    LIMIT 1
) r;

-- recent_runs --
-- A routine's latest runs, without their payloads (GET /api/runs/{runId} has each whole).
SELECT id, routine_id, company_id, trigger_id, source, status, triggered_at, scheduled_for,
       idempotency_key, linked_issue_id, coalesced_into_run_id, failure_reason, decided_at,
       completed_at, replay_of, input_variables, resolved_variables, assignee_override,
       project_override, NULL::jsonb AS payload, octet_length(payload::text) AS payload_bytes
FROM routine_runs WHERE routine_id = $1 ORDER BY triggered_at DESC, id DESC LIMIT $2;

-- active_issue --
-- The routine's open execution issue, newest first.
SELECT id, title, status, created_at, origin_run_id, coalesced_fire_count
FROM issues
WHERE origin_kind = 'routine_execution' AND origin_id = $1
  AND status IN ('backlog', 'todo', 'in_progress', 'in_review', 'blocked')
ORDER BY created_at DESC
LIMIT 1;

-- set_run_overrides --
-- A board operator's one-run assignee/project.
UPDATE routine_runs SET assignee_override = $2, project_override = $3 WHERE id = $1;
