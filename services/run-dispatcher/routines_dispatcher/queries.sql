-- lock_routines --
-- Lock the routines of these runs in a stable order (no deadlocks between dispatchers).
-- NO KEY UPDATE: serialises decisions without blocking the FOR KEY SHARE that every run
-- INSERT takes through its foreign key, so ingest never waits on a decision.
SELECT id, company_id, title, description, assignee_agent_id, project_id, goal_id, parent_issue_id,
       priority, status, concurrency_policy, variables, stale_after_sec, stale_action
FROM routines
WHERE id IN (SELECT routine_id FROM routine_runs WHERE id = ANY($1::uuid[]))
ORDER BY id
FOR NO KEY UPDATE;

-- lock_routines_skip_locked --
-- Same, skipping routines another dispatcher is deciding right now (sweeper).
SELECT id, company_id, title, description, assignee_agent_id, project_id, goal_id, parent_issue_id,
       priority, status, concurrency_policy, variables, stale_after_sec, stale_action
FROM routines
WHERE id IN (SELECT routine_id FROM routine_runs WHERE id = ANY($1::uuid[]))
ORDER BY id
FOR NO KEY UPDATE SKIP LOCKED;

-- undecided_runs --
-- The runs of the locked routines among these still `received`, oldest first, locked: runs
-- decided already (a redelivered message, one the sweeper beat) are neither returned nor locked —
-- the API may hold one (completing its issue), then want the routine. The only way in is the
-- primary key: no index names the status (migration 0011).
-- The payload itself stays in Postgres (copied onto issues by SQL): stored JSON never has to
-- survive a Python decoder here, however it got into the table — unless the routine declares
-- variables ($3: those routines), whose values may come from the payload's top-level keys or the
-- run's input variables (read for those routines only: each is decoded in Python).
SELECT id, routine_id, source, triggered_at, octet_length(payload::text) AS payload_bytes,
       CASE WHEN routine_id = ANY($3::uuid[]) THEN payload END AS payload,
       CASE WHEN routine_id = ANY($3::uuid[]) THEN input_variables END AS input_variables,
       assignee_override, project_override
FROM routine_runs
WHERE id = ANY($1::uuid[]) AND routine_id = ANY($2::uuid[]) AND status = 'received'
ORDER BY triggered_at, id
FOR UPDATE;

-- active_issues --
-- The newest open execution issue of each routine: one index probe per routine, however many
-- issues it has open (an always_enqueue routine may have thousands). The issue and its run are
-- locked FOR KEY SHARE, as a foreign key's check would lock them: runs decided now may be linked
-- to both (migration 0012), so neither can be deleted before this commits. One being deleted is
-- waited for, then passed over (the next newest open issue is taken; a run gone reads NULL).
SELECT r.id AS routine_id, i.id, o.id AS origin_run_id, i.created_at, i.assignee_agent_id
FROM unnest($1::uuid[]) AS r(id)
CROSS JOIN LATERAL (
    SELECT id, origin_run_id, created_at, assignee_agent_id FROM issues
    WHERE origin_kind = 'routine_execution' AND origin_id = r.id
      AND status IN ('backlog', 'todo', 'in_progress', 'in_review', 'blocked')
    ORDER BY created_at DESC
    LIMIT 1
    FOR KEY SHARE
) i
LEFT JOIN LATERAL (SELECT id FROM routine_runs WHERE id = i.origin_run_id FOR KEY SHARE) o ON true;

-- insert_execution_issues --
-- Create execution issues (one row per element of the arrays; an array passed as NULL is NULL in
-- every row): rendered title and description
-- (NULL: the routine's own, which has no variables), and a run's one-time assignee/project
-- override (NULL: the routine's). $8: the decision's time (NULL: now; a slot decided ahead is
-- decided as of the slot).
INSERT INTO issues (id, company_id, title, description, status, priority, project_id, goal_id,
                    parent_issue_id, assignee_agent_id, origin_kind, origin_id, origin_run_id, payload,
                    created_at, updated_at)
SELECT i.id, r.company_id, COALESCE(i.title, r.title), COALESCE(i.description, r.description),
       'todo', r.priority,
       COALESCE(i.project_id, r.project_id), r.goal_id, r.parent_issue_id,
       COALESCE(i.assignee_id, r.assignee_agent_id), 'routine_execution', r.id, i.run_id, run.payload,
       COALESCE($8::timestamptz, now()), COALESCE($8::timestamptz, now())
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::uuid[], $7::uuid[])
     AS i(id, routine_id, run_id, title, description, assignee_id, project_id)
JOIN routines r ON r.id = i.routine_id
JOIN routine_runs run ON run.id = i.run_id;

-- cancel_stale_issues --
-- Close stale execution issues as cancelled; their runs fail with the reason. $3: as above.
WITH closed AS (
    UPDATE issues SET status = 'cancelled', updated_at = COALESCE($3::timestamptz, now())
    WHERE id = ANY($1::uuid[]) AND status IN ('backlog', 'todo', 'in_progress', 'in_review', 'blocked')
    RETURNING id, origin_run_id, origin_id, company_id
), failed AS (
    UPDATE routine_runs SET status = 'failed', failure_reason = $2,
                            completed_at = COALESCE($3::timestamptz, now())
    WHERE id IN (SELECT origin_run_id FROM closed) AND status = 'issue_created'
)
INSERT INTO routine_activity (company_id, routine_id, actor_kind, action, details)
SELECT company_id, origin_id, 'system', 'stale_cancelled',
       jsonb_build_object('issueId', id, 'runId', origin_run_id, 'reason', $2::text)
FROM closed;

-- record_coalesced_fires --
-- Tell the active issues that more work arrived: the count, and references to the latest 100
-- fires (run id, source, time, payload size) — never copies of their payloads. $4: as above.
UPDATE issues AS i
SET coalesced_fire_count = i.coalesced_fire_count + u.n,
    -- The last 100 elements (lax mode: a shorter array is taken whole); COALESCED_FIRE_REFS in decide.py.
    coalesced_fires = jsonb_path_query_array(i.coalesced_fires || f.fires, '$[last - 99 to last]'),
    updated_at = COALESCE($4::timestamptz, now())
FROM unnest($1::uuid[], $2::int[], $3::text[]) AS u(id, n, fires_json)
CROSS JOIN LATERAL (SELECT u.fires_json::jsonb AS fires) f
WHERE i.id = u.id;

-- set_run_decisions --
-- Final status and links of decided runs, and the variable values each was decided with (NULL:
-- its routine declares none); arrays as above. $7: as above. The runs are found by `id = ANY`
-- as well as by the join: then the primary key is scanned once for all of them, in the order of
-- the table (the join alone was planned as a hash of the whole table while it was small — 20,000
-- runs read for every 300 decided — or as one index probe per run).
UPDATE routine_runs AS r
SET status = u.status, linked_issue_id = u.issue_id, coalesced_into_run_id = u.into_run_id,
    failure_reason = u.reason, resolved_variables = u.vals::jsonb,
    decided_at = COALESCE($7::timestamptz, now())
FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[])
     AS u(id, status, issue_id, into_run_id, reason, vals)
WHERE r.id = ANY($1::uuid[]) AND r.id = u.id;

-- touch_routines --
-- lastTriggeredAt / lastEnqueuedAt of the routines that got decisions. $4: as above.
UPDATE routines AS r
SET last_triggered_at = GREATEST(r.last_triggered_at, u.triggered_at),
    last_enqueued_at = CASE WHEN u.enqueued THEN COALESCE($4::timestamptz, now()) ELSE r.last_enqueued_at END
FROM unnest($1::uuid[], $2::timestamptz[], $3::bool[]) AS u(id, triggered_at, enqueued)
WHERE r.id = u.id;

-- fail_run --
-- Mark one undecided run failed (it can never be decided), with what a decision needs to announce.
UPDATE routine_runs AS run SET status = 'failed', failure_reason = $2, decided_at = now()
FROM routines r
WHERE run.id = $1 AND run.status = 'received' AND r.id = run.routine_id
RETURNING run.id, run.routine_id, run.triggered_at, r.assignee_agent_id;

-- sweep_received_batches --
-- The sweeper's work: batches recorded more than $1 seconds ago (migration 0010), oldest first,
-- after ($4, $5) (a sweep goes on past batches it could not settle; from the earliest time and
-- id 0 at first: always a condition the index can take), up to $2 of them and about $3 runs (always one
-- batch, however large). Each with its size and its runs still undecided; a batch whose runs are
-- all decided (or gone) is deleted here. Each batch's runs are looked up by primary key (`= ANY`
-- of its own array, under an aggregate: never flattened into a join that could be planned as a
-- scan of routine_runs).
WITH due AS (
    SELECT id, recorded_at, run_ids, run_count FROM (
        SELECT id, recorded_at, run_ids, run_count,
               sum(run_count) OVER (ORDER BY recorded_at, id) - run_count AS before
        FROM received_batches
        WHERE recorded_at < now() - make_interval(secs => $1)
          AND (recorded_at, id) > ($4::timestamptz, $5::bigint)
        ORDER BY recorded_at, id
        LIMIT $2
    ) AS oldest
    WHERE before < $3
), checked AS (
    SELECT due.id, due.recorded_at, due.run_count AS size, undecided.run_ids
    FROM due, LATERAL (SELECT COALESCE(array_agg(r.id ORDER BY r.triggered_at), '{}') AS run_ids
                       FROM routine_runs r
                       WHERE r.id = ANY(due.run_ids) AND r.status = 'received') AS undecided
), settled AS (
    -- A batch another sweep is deleting is left to it (SKIP LOCKED): two sweeps never wait on each
    -- other, so never deadlock deleting the same batches in different orders.
    DELETE FROM received_batches b
    WHERE b.id IN (SELECT s.id FROM received_batches s JOIN checked ON checked.id = s.id
                   WHERE cardinality(checked.run_ids) = 0
                   FOR UPDATE OF s SKIP LOCKED)
)
SELECT id, recorded_at, size, run_ids FROM checked ORDER BY recorded_at, id;

-- delete_received_batches --
-- Batches whose undecided runs the sweeper has just decided; one another sweep is deleting is
-- left to it, as above.
DELETE FROM received_batches
WHERE id IN (SELECT id FROM received_batches WHERE id = ANY($1::bigint[]) FOR UPDATE SKIP LOCKED);

-- missing_runs --
-- Which of these run ids do not exist (their messages can never succeed).
SELECT u.id FROM unnest($1::uuid[]) AS u(id)
WHERE NOT EXISTS (SELECT 1 FROM routine_runs r WHERE r.id = u.id);
