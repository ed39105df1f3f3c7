-- insert_run --
-- Record a fire. Unique indexes enforce idempotency key (in its scope $9), delivery key and
-- schedule slot; a keyed run keeps a hash of its payload.
INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, payload, idempotency_key,
                          delivery_key, scheduled_for, idempotency_scope, payload_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
        CASE WHEN $6::text IS NOT NULL THEN sha256(convert_to($5::jsonb::text, 'UTF8')) END)
ON CONFLICT DO NOTHING
RETURNING *;

-- run_by_idempotency_key --
-- The original run of a repeated idempotency key in its scope, and whether payload $4 is its.
SELECT *, payload_hash IS NOT DISTINCT FROM sha256(convert_to($4::jsonb::text, 'UTF8')) AS same_payload
FROM routine_runs WHERE routine_id = $1 AND idempotency_scope = $2 AND idempotency_key = $3;

-- run_by_delivery_key --
-- The original run of a repeated webhook delivery.
SELECT * FROM routine_runs WHERE trigger_id = $1 AND delivery_key = $2;

-- run_by_id --
-- One run.
SELECT * FROM routine_runs WHERE id = $1;
