-- insert_run --
-- Record a fire. Unique indexes enforce idempotency key, delivery key and schedule slot.
-- The NOT EXISTS checks read the snapshot first: a repeated key whose run is being decided (its
-- row updated by an open dispatcher transaction) is answered from the committed row, instead of
-- the unique index making this INSERT wait for the decision to commit. Ingest never waits on a
-- decision; ON CONFLICT still settles a race between two new inserts.
INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, payload, idempotency_key,
                          delivery_key, scheduled_for)
SELECT $1, $2, $3, $4, $5, $6, $7, $8
WHERE NOT EXISTS (SELECT 1 FROM routine_runs
                  WHERE routine_id = $1 AND idempotency_key = $6 AND idempotency_key IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM routine_runs
                  WHERE trigger_id = $3 AND delivery_key = $7 AND delivery_key IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM routine_runs WHERE trigger_id = $3 AND scheduled_for = $8)
ON CONFLICT DO NOTHING
RETURNING *;

-- run_by_idempotency_key --
-- The original run of a repeated idempotency key.
SELECT * FROM routine_runs WHERE routine_id = $1 AND idempotency_key = $2;

-- run_by_delivery_key --
-- The original run of a repeated webhook delivery.
SELECT * FROM routine_runs WHERE trigger_id = $1 AND delivery_key = $2;

-- run_by_id --
-- One run.
SELECT * FROM routine_runs WHERE id = $1;
