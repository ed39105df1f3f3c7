-- principal_by_token --
-- Who a bearer token belongs to (unrevoked tokens only).
SELECT t.id AS token_id, t.kind, t.agent_id, a.status AS agent_status,
       COALESCE(a.company_id, b.company_id) AS company_id
FROM api_tokens t
LEFT JOIN agents a ON a.id = t.agent_id
LEFT JOIN board_memberships b ON b.id = t.board_membership_id
WHERE t.token_hash = $1 AND t.revoked_at IS NULL;

-- insert_company --
-- A new company.
INSERT INTO companies (name) VALUES ($1) RETURNING *;

-- list_companies --
-- Companies, all or one.
SELECT * FROM companies WHERE ($1::uuid IS NULL OR id = $1) ORDER BY created_at, id;

-- company_exists --
-- Whether a company exists.
SELECT EXISTS (SELECT 1 FROM companies WHERE id = $1);

-- insert_agent --
-- A new agent.
INSERT INTO agents (company_id, name) VALUES ($1, $2) RETURNING *;

-- insert_token --
-- A new token (hash only).
INSERT INTO api_tokens (token_hash, kind, agent_id, board_membership_id, name)
VALUES ($1, $2, $3, $4, $5) RETURNING id;

-- list_agents --
-- Agents of a company.
SELECT * FROM agents WHERE company_id = $1 ORDER BY created_at, id;

-- agent_by_id --
-- One agent.
SELECT * FROM agents WHERE id = $1;

-- agent_status --
-- An agent's status (NULL when there is no such agent).
SELECT status FROM agents WHERE id = $1;

-- update_agent_status --
-- Change an agent's status.
UPDATE agents SET status = $2, updated_at = now() WHERE id = $1 RETURNING *;

-- revoke_agent_tokens --
-- Revoke every live API key of an agent (rotation, termination). Revocation is permanent.
UPDATE api_tokens SET revoked_at = now() WHERE agent_id = $1 AND revoked_at IS NULL;

-- list_board_tokens --
-- A company's board tokens (never the token itself: only its hash is stored).
SELECT t.id, t.kind, t.name, b.company_id, t.created_at, t.revoked_at
FROM api_tokens t JOIN board_memberships b ON b.id = t.board_membership_id
WHERE b.company_id = $1 ORDER BY t.created_at, t.id;

-- board_token_by_id --
-- One board token with its company.
SELECT t.id, t.kind, t.name, b.company_id, t.created_at, t.revoked_at
FROM api_tokens t JOIN board_memberships b ON b.id = t.board_membership_id
WHERE t.id = $1;

-- list_instance_tokens --
-- The instance admin tokens.
SELECT id, kind, name, NULL::uuid AS company_id, created_at, revoked_at
FROM api_tokens WHERE kind = 'instance_admin' ORDER BY created_at, id;

-- live_instance_tokens --
-- How many instance admin tokens still work.
SELECT count(*) FROM api_tokens WHERE kind = 'instance_admin' AND revoked_at IS NULL;

-- revoke_token --
-- Revoke one token of the given kind (idempotent: a revoked token keeps its first revocation time).
UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now())
WHERE id = $1 AND kind = $2
RETURNING id, kind, name, created_at, revoked_at;

-- insert_project --
-- A new project.
INSERT INTO projects (company_id, name) VALUES ($1, $2) RETURNING *;

-- list_projects --
-- Projects of a company.
SELECT * FROM projects WHERE company_id = $1 ORDER BY created_at, id;

-- insert_goal --
-- A new goal.
INSERT INTO goals (company_id, title) VALUES ($1, $2) RETURNING *;

-- list_goals --
-- Goals of a company.
SELECT * FROM goals WHERE company_id = $1 ORDER BY created_at, id;

-- insert_board_membership --
-- A board operator of a company.
INSERT INTO board_memberships (company_id, name) VALUES ($1, $2) RETURNING *;

-- owner_company --
-- The company of a referenced row (agents, projects, goals, issues).
SELECT company_id FROM agents WHERE id = $1 AND $2 = 'agent'
UNION ALL SELECT company_id FROM projects WHERE id = $1 AND $2 = 'project'
UNION ALL SELECT company_id FROM goals WHERE id = $1 AND $2 = 'goal'
UNION ALL SELECT company_id FROM issues WHERE id = $1 AND $2 = 'issue';

-- insert_issue --
-- A plain issue.
INSERT INTO issues (company_id, title, description, status, priority, project_id, goal_id,
                    parent_issue_id, assignee_agent_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *;

-- list_issues --
-- Issues of a company with optional filters, newest first. Stored JSON is answered as text,
-- verbatim (never re-decoded, so no stored value can break a listing); a payload over $6 bytes
-- is left out (payload_bytes still says its size).
SELECT i.id, i.company_id, i.title, i.description, i.status, i.priority, i.project_id, i.goal_id,
       i.parent_issue_id, i.assignee_agent_id, i.origin_kind, i.origin_id, i.origin_run_id,
       i.coalesced_fire_count, i.coalesced_fires::text AS coalesced_fires, i.created_at, i.updated_at,
       CASE WHEN $6::int IS NULL OR octet_length(j.payload) <= $6 THEN j.payload END AS payload,
       octet_length(j.payload) AS payload_bytes
FROM issues i CROSS JOIN LATERAL (SELECT i.payload::text AS payload) j
WHERE i.company_id = $1
  AND ($2::uuid IS NULL OR i.assignee_agent_id = $2)
  AND ($3::text IS NULL OR i.status = $3)
  AND ($4::uuid IS NULL OR (i.origin_kind = 'routine_execution' AND i.origin_id = $4))
ORDER BY i.created_at DESC, i.id
LIMIT $5;

-- issue_by_id --
-- One issue, its stored JSON as text, the whole payload.
SELECT i.id, i.company_id, i.title, i.description, i.status, i.priority, i.project_id, i.goal_id,
       i.parent_issue_id, i.assignee_agent_id, i.origin_kind, i.origin_id, i.origin_run_id,
       i.coalesced_fire_count, i.coalesced_fires::text AS coalesced_fires, i.created_at, i.updated_at,
       j.payload,
       octet_length(j.payload) AS payload_bytes
FROM issues i CROSS JOIN LATERAL (SELECT i.payload::text AS payload) j
WHERE i.id = $1;

-- issue_for_update --
-- What an issue update checks, locked. NO KEY UPDATE: an update changes the status, never the id,
-- and a decision reading the routine's open issue FOR KEY SHARE (it may link runs to it) must not
-- wait for an agent's update while it holds its routines' locks.
SELECT id, company_id, assignee_agent_id, origin_kind, origin_id, origin_run_id, status
FROM issues WHERE id = $1 FOR NO KEY UPDATE;

-- update_issue_status --
-- Change an issue's status.
UPDATE issues SET status = $2, updated_at = now() WHERE id = $1;

-- complete_origin_run --
-- The execution issue is done: its run is completed.
UPDATE routine_runs SET status = 'completed', completed_at = now()
WHERE id = $1 AND status = 'issue_created';

-- fail_origin_run --
-- The execution issue was cancelled: its run failed.
UPDATE routine_runs SET status = 'failed', failure_reason = $2, completed_at = now()
WHERE id = $1 AND status = 'issue_created';

-- insert_routine --
-- A new routine.
INSERT INTO routines (company_id, title, description, assignee_agent_id, project_id, goal_id,
                      parent_issue_id, priority, status, concurrency_policy, catch_up_policy)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *;

-- list_routines --
-- Routines of a company with optional filters.
SELECT * FROM routines
WHERE company_id = $1 AND ($2::text IS NULL OR status = $2)
  AND ($3::uuid IS NULL OR assignee_agent_id = $3)
ORDER BY created_at, id;

-- routine_by_id --
-- One routine.
SELECT * FROM routines WHERE id = $1;

-- routine_for_update --
-- One routine, locked.
SELECT * FROM routines WHERE id = $1 FOR NO KEY UPDATE;

-- lock_trigger --
-- One trigger, locked: a scheduler holding it for a slot it is preparing commits (and advances
-- it) first.
SELECT 1 FROM routine_triggers WHERE id = $1 FOR NO KEY UPDATE;

-- update_routine --
-- Replace a routine's editable fields.
UPDATE routines
SET title = $2, description = $3, assignee_agent_id = $4, project_id = $5, goal_id = $6,
    parent_issue_id = $7, priority = $8, status = $9, concurrency_policy = $10,
    catch_up_policy = $11, updated_at = now()
WHERE id = $1 RETURNING *;

-- triggers_of_routine --
-- A routine's triggers.
SELECT * FROM routine_triggers WHERE routine_id = $1 ORDER BY created_at, id;

-- trigger_by_id --
-- One trigger with its routine's company and assignee.
SELECT t.*, r.assignee_agent_id, r.status AS routine_status
FROM routine_triggers t JOIN routines r ON r.id = t.routine_id WHERE t.id = $1;

-- insert_trigger --
-- A new trigger.
INSERT INTO routine_triggers (id, routine_id, company_id, kind, label, enabled, cron_expression,
                              timezone, next_run_at, public_id, signing_mode, replay_window_sec)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING *;

-- update_trigger --
-- Replace a trigger's editable fields.
UPDATE routine_triggers
SET label = $2, enabled = $3, cron_expression = $4, timezone = $5, next_run_at = $6,
    signing_mode = $7, replay_window_sec = $8, updated_at = now()
WHERE id = $1 RETURNING *;

-- set_next_run_at --
-- Park or reschedule one trigger.
UPDATE routine_triggers SET next_run_at = $2, updated_at = now() WHERE id = $1;

-- delete_trigger --
-- Delete a trigger (its runs keep their history with trigger_id NULL).
DELETE FROM routine_triggers WHERE id = $1;

-- insert_secret --
-- A new encrypted webhook secret.
INSERT INTO webhook_secrets (trigger_id, ciphertext) VALUES ($1, $2);

-- expire_secrets --
-- On rotation: the current secret stops working at $2 (now, or the end of a grace period); every
-- older one stops now, so at most two are ever live (the new one and the one it replaces).
UPDATE webhook_secrets
SET expires_at = CASE WHEN expires_at IS NULL THEN $2::timestamptz ELSE now() END
WHERE trigger_id = $1 AND (expires_at IS NULL OR expires_at > now());

-- delete_expired_secrets --
-- Forget secrets that can no longer verify anything.
DELETE FROM webhook_secrets WHERE trigger_id = $1 AND expires_at IS NOT NULL AND expires_at <= now();

-- count_rotation --
-- Rotations of this trigger within the last $2 seconds, counting this one unless $3 of them are
-- there already; answers the count before and when the oldest leaves the window.
WITH recent AS (
    SELECT array(SELECT t FROM unnest(secret_rotated_at) AS t
                 WHERE t > now() - make_interval(secs => $2) ORDER BY t) AS times
    FROM routine_triggers WHERE id = $1
), updated AS (
    UPDATE routine_triggers t SET secret_rotated_at = recent.times || now()
    FROM recent WHERE t.id = $1 AND cardinality(recent.times) < $3
    RETURNING t.id
)
SELECT cardinality(times) AS n,
       ceil(extract(epoch FROM times[1] + make_interval(secs => $2) - now()))::int AS retry_after
FROM recent;

-- runs_of_routine --
-- Run history, newest first; payloads as text, left out over $3 bytes (as list_issues).
SELECT r.id, r.routine_id, r.company_id, r.trigger_id, r.source, r.status, r.triggered_at,
       r.scheduled_for, r.idempotency_key, r.linked_issue_id, r.coalesced_into_run_id,
       r.failure_reason, r.decided_at, r.completed_at,
       CASE WHEN $3::int IS NULL OR octet_length(j.payload) <= $3 THEN j.payload END AS payload,
       octet_length(j.payload) AS payload_bytes
FROM routine_runs r CROSS JOIN LATERAL (SELECT r.payload::text AS payload) j
WHERE r.routine_id = $1 ORDER BY r.triggered_at DESC, r.id LIMIT $2;

-- run_with_payload --
-- One run with its whole payload (as text).
SELECT r.id, r.routine_id, r.company_id, r.trigger_id, r.source, r.status, r.triggered_at,
       r.scheduled_for, r.idempotency_key, r.linked_issue_id, r.coalesced_into_run_id,
       r.failure_reason, r.decided_at, r.completed_at,
       j.payload,
       octet_length(j.payload) AS payload_bytes
FROM routine_runs r CROSS JOIN LATERAL (SELECT r.payload::text AS payload) j
WHERE r.id = $1;

-- lock_company --
-- Serialise quota checks of one company (NO KEY UPDATE: rows referencing it can still be inserted).
SELECT id FROM companies WHERE id = $1 FOR NO KEY UPDATE;

-- count_routines --
-- Routines a company holds against its quota (archived ones are done with and do not count).
SELECT count(*) FROM routines WHERE company_id = $1 AND status <> 'archived';

-- count_triggers --
-- Triggers of one routine.
SELECT count(*) FROM routine_triggers WHERE routine_id = $1;

-- count_webhook_triggers --
-- Webhook triggers of a company (each has its own rate limit, so they are bounded together).
SELECT count(*) FROM routine_triggers WHERE company_id = $1 AND kind = 'webhook';

-- count_agents --
-- Agents of a company that are not terminated.
SELECT count(*) FROM agents WHERE company_id = $1 AND status <> 'terminated';

-- count_board_tokens --
-- Live board tokens of a company.
SELECT count(*) FROM api_tokens t JOIN board_memberships b ON b.id = t.board_membership_id
WHERE b.company_id = $1 AND t.revoked_at IS NULL;

-- count_projects --
-- Projects of a company.
SELECT count(*) FROM projects WHERE company_id = $1;

-- count_goals --
-- Goals of a company.
SELECT count(*) FROM goals WHERE company_id = $1;

-- transaction_now --
-- The database's clock: now(), the start of the current transaction.
SELECT now();

-- lock_instance_tokens --
-- Serialise revocations of instance admin tokens, so two admins cannot each revoke "the other last one".
SELECT pg_advisory_xact_lock(hashtext('routines.instance_tokens'));
