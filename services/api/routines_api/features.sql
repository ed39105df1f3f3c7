-- run_by_id --
-- One run.
SELECT * FROM routine_runs WHERE id = $1;

-- runs_page --
-- One page of a routine's runs, newest first, after a keyset cursor, with optional filters.
SELECT * FROM routine_runs
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
