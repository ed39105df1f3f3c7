-- alerting_routines --
-- Of these routines, those with failure alerting or auto-pause on (or an alert outstanding).
SELECT id, company_id, assignee_agent_id, status, failure_alert_after, auto_pause_after,
       failure_alerted_at
FROM routines
WHERE id = ANY($1::uuid[])
  AND (failure_alert_after IS NOT NULL OR auto_pause_after IS NOT NULL OR failure_alerted_at IS NOT NULL);

-- latest_settled_runs --
-- A routine's most recently settled runs (failed or completed), newest first.
SELECT id, status, failure_reason
FROM routine_runs
WHERE routine_id = $1 AND status IN ('failed', 'completed')
ORDER BY COALESCE(completed_at, decided_at, triggered_at) DESC, id DESC
LIMIT $2;

-- mark_alerted --
-- Record that the failure alert fired (only one caller wins).
UPDATE routines SET failure_alerted_at = now()
WHERE id = $1 AND failure_alerted_at IS NULL
RETURNING id;

-- clear_alerted --
-- The routine recovered (only one caller wins).
UPDATE routines SET failure_alerted_at = NULL
WHERE id = $1 AND failure_alerted_at IS NOT NULL
RETURNING id;

-- auto_pause --
-- Pause an active routine with a reason, park its schedule triggers, record the revision.
WITH paused AS (
    UPDATE routines SET status = 'paused', paused_reason = $2, updated_at = now()
    WHERE id = $1 AND status = 'active'
    RETURNING id, company_id
), parked AS (
    UPDATE routine_triggers SET next_run_at = NULL, updated_at = now()
    WHERE routine_id IN (SELECT id FROM paused) AND kind = 'schedule'
), revised AS (
    -- The status change is a revision like any other, made by the system.
    INSERT INTO routine_revisions (routine_id, company_id, number, actor_kind, snapshot, changes)
    SELECT p.id, p.company_id, last.number + 1, 'system',
           last.snapshot || '{"status": "paused"}'::jsonb,
           '{"status": {"from": "active", "to": "paused"}}'::jsonb
    FROM paused p
    CROSS JOIN LATERAL (SELECT number, snapshot FROM routine_revisions
                        WHERE routine_id = p.id ORDER BY number DESC LIMIT 1) last
)
INSERT INTO routine_activity (company_id, routine_id, actor_kind, action, details)
SELECT company_id, id, 'system', 'auto_paused', jsonb_build_object('reason', $2::text) FROM paused
RETURNING routine_id;

-- insert_alert_activity --
-- An alert or recovery in the routine's activity log.
INSERT INTO routine_activity (company_id, routine_id, actor_kind, action, details)
VALUES ($1, $2, 'system', $3, $4);
