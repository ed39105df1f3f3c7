-- insert_run --
-- Record a fire. Unique indexes enforce idempotency key (in its scope $9), delivery key and
-- schedule slot; a keyed run keeps a hash of its payload.
-- The NOT EXISTS checks read the snapshot first: a repeated key whose run is being decided (its
-- row updated by an open dispatcher transaction) is answered from the committed row, instead of
-- the unique index making this INSERT wait for the decision to commit. Ingest never waits on a
-- decision; ON CONFLICT still settles a race between two new inserts.
INSERT INTO routine_runs (routine_id, company_id, trigger_id, source, payload, idempotency_key,
                          delivery_key, scheduled_for, idempotency_scope, payload_hash)
SELECT $1, $2, $3, $4, $5::jsonb, $6::text, $7::text, $8, $9::text,
       CASE WHEN $6::text IS NOT NULL THEN sha256(convert_to($5::jsonb::text, 'UTF8')) END
WHERE NOT EXISTS (SELECT 1 FROM routine_runs
                  WHERE routine_id = $1 AND idempotency_scope = $9 AND idempotency_key = $6
                    AND idempotency_key IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM routine_runs
                  WHERE trigger_id = $3 AND delivery_key = $7 AND delivery_key IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM routine_runs WHERE trigger_id = $3 AND scheduled_for = $8)
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

