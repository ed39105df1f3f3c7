-- insert_run --
-- Record a fire. Unique indexes enforce idempotency key, delivery key and schedule slot.
INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, payload, idempotency_key,
                          delivery_key, scheduled_for)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
