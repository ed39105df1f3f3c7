-- Routine features (issue 16): replay and backfill runs, variables, schedule health settings,
-- per-run overrides, revisions and an activity log.

-- Runs: two new sources. `replay_of` points at the run a replay repeats.
ALTER TABLE routine_runs DROP CONSTRAINT routine_runs_source_check;
ALTER TABLE routine_runs ADD CONSTRAINT routine_runs_source_check
    CHECK (source IN ('schedule', 'webhook', 'api', 'manual', 'replay', 'backfill'));
ALTER TABLE routine_runs
    ADD COLUMN replay_of uuid REFERENCES routine_runs (id) ON DELETE SET NULL,
    -- Values given explicitly for this run (manual run `variables`); resolved at decision time.
    ADD COLUMN input_variables jsonb NOT NULL DEFAULT '{}',
    -- The values the execution issue was rendered with (NULL until decided).
    ADD COLUMN resolved_variables jsonb,
    -- A board operator's one-run overrides (agents may not set them).
    ADD COLUMN assignee_override uuid REFERENCES agents (id),
    ADD COLUMN project_override uuid REFERENCES projects (id);
-- Per-trigger history (triggerId filter, lastResult) and a company's calendar of runs.
CREATE INDEX routine_runs_trigger_history ON routine_runs (trigger_id, triggered_at DESC)
    WHERE trigger_id IS NOT NULL;

-- Routines: declared variables and the schedule-health settings.
ALTER TABLE routines
    ADD COLUMN variables jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN failure_alert_after integer CHECK (failure_alert_after BETWEEN 1 AND 1000),
    ADD COLUMN auto_pause_after integer CHECK (auto_pause_after BETWEEN 1 AND 1000),
    ADD COLUMN stale_after_sec integer CHECK (stale_after_sec BETWEEN 60 AND 31536000),
    ADD COLUMN stale_action text NOT NULL DEFAULT 'report' CHECK (stale_action IN ('report', 'cancel')),
    ADD COLUMN paused_reason text CHECK (length(paused_reason) <= 500),
    -- Set when the failure alert fired; cleared (with a recovery event) by the next success.
    ADD COLUMN failure_alerted_at timestamptz;

ALTER TABLE routine_triggers ADD COLUMN last_rotated_at timestamptz;

-- Every change of a routine, with who made it and what changed. `number` orders them.
CREATE TABLE routine_revisions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    routine_id   uuid NOT NULL REFERENCES routines (id) ON DELETE CASCADE,
    company_id   uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    number       integer NOT NULL CHECK (number >= 1),
    actor_kind   text NOT NULL CHECK (actor_kind IN ('instance_admin', 'board', 'agent', 'system')),
    actor_id     uuid,
    snapshot     jsonb NOT NULL,
    changes      jsonb NOT NULL DEFAULT '{}',
    restored_from uuid REFERENCES routine_revisions (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (routine_id, number)
);

-- Who did what to a routine (runs' decisions are read from routine_runs, not copied here).
CREATE TABLE routine_activity (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id  uuid NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    routine_id  uuid NOT NULL REFERENCES routines (id) ON DELETE CASCADE,
    actor_kind  text NOT NULL CHECK (actor_kind IN ('instance_admin', 'board', 'agent', 'system')),
    actor_id    uuid,
    action      text NOT NULL CHECK (length(action) BETWEEN 1 AND 64),
    details     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX routine_activity_routine ON routine_activity (routine_id, created_at DESC, id DESC);
CREATE INDEX routine_activity_company ON routine_activity (company_id, created_at DESC, id DESC);

-- Routines made before revisions existed start with one.
INSERT INTO routine_revisions (routine_id, company_id, number, actor_kind, snapshot, created_at)
SELECT id, company_id, 1, 'system',
       jsonb_build_object('title', title, 'description', description,
                          'assigneeAgentId', assignee_agent_id, 'projectId', project_id,
                          'goalId', goal_id, 'parentIssueId', parent_issue_id, 'priority', priority,
                          'status', status, 'concurrencyPolicy', concurrency_policy,
                          'catchUpPolicy', catch_up_policy, 'variables', variables,
                          'failureAlertAfter', failure_alert_after, 'autoPauseAfter', auto_pause_after,
                          'staleAfterSec', stale_after_sec, 'staleAction', stale_action),
       created_at
FROM routines;
