-- trigger_by_public_id --
-- A webhook trigger, its routine's status, and its live encrypted secrets.
SELECT t.id, t.routine_id, t.company_id, t.enabled, t.signing_mode, t.replay_window_sec,
       r.status AS routine_status,
       COALESCE(array_agg(s.ciphertext ORDER BY s.created_at DESC)
                FILTER (WHERE s.id IS NOT NULL), '{}') AS secrets,
       min(s.expires_at) AS secrets_expire_at, now() AS db_now
FROM routine_triggers t
JOIN routines r ON r.id = t.routine_id
LEFT JOIN webhook_secrets s ON s.trigger_id = t.id AND (s.expires_at IS NULL OR s.expires_at > now())
WHERE t.public_id = $1 AND t.kind = 'webhook'
GROUP BY t.id, r.status;

-- insert_webhook_runs --
-- Record a batch of accepted fires in one statement (group commit); conflicts are resolved after.
-- An Idempotency-Key is scoped to its trigger and bound to a hash of the payload.
-- A key that already has a committed run is filtered out by the snapshot (NOT EXISTS), so a retry
-- whose run is being decided right now does not wait on the unique index for the decision to
-- commit (ingest never waits on a decision); ON CONFLICT settles races between new inserts.
-- OFFSET 0 keeps each NOT EXISTS a per-row index probe: as anti-joins, the generic plan of this
-- prepared statement hashed the whole of routine_runs (sequential scans) on every batch.
INSERT INTO routine_runs (id, routine_id, company_id, trigger_id, source, payload, idempotency_key,
                          delivery_key, delivery_signature, idempotency_scope, payload_hash)
SELECT u.id, u.routine_id, u.company_id, u.trigger_id, 'webhook', u.payload, u.idempotency_key,
       u.delivery_key, u.delivery_signature,
       CASE WHEN u.idempotency_key IS NOT NULL THEN 'webhook:' || u.trigger_id END,
       CASE WHEN u.idempotency_key IS NOT NULL THEN sha256(convert_to(u.payload::text, 'UTF8')) END
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::jsonb[], $6::text[], $7::text[], $8::text[])
     AS u(id, routine_id, company_id, trigger_id, payload, idempotency_key, delivery_key, delivery_signature)
WHERE NOT EXISTS (SELECT 1 FROM routine_runs r
                  WHERE r.trigger_id = u.trigger_id AND r.delivery_key = u.delivery_key
                    AND r.delivery_key IS NOT NULL OFFSET 0)
  AND NOT EXISTS (SELECT 1 FROM routine_runs r
                  WHERE r.routine_id = u.routine_id AND r.idempotency_key = u.idempotency_key
                    AND r.idempotency_scope = 'webhook:' || u.trigger_id
                    AND r.idempotency_key IS NOT NULL OFFSET 0)
ON CONFLICT DO NOTHING
RETURNING id;

-- existing_delivery --
-- The run an earlier delivery with this key created, and whether it is inside the replay window.
SELECT id, routine_id, trigger_id, status, delivery_signature,
       triggered_at > now() - make_interval(secs => $3) AS in_window
FROM routine_runs WHERE trigger_id = $1 AND delivery_key = $2;

-- existing_idempotent --
-- The run an earlier request to this trigger with this Idempotency-Key created, and whether
-- payload $4 is the one it was made of.
SELECT id, routine_id, trigger_id, status,
       payload_hash IS NOT DISTINCT FROM sha256(convert_to($4::jsonb::text, 'UTF8')) AS same_payload
FROM routine_runs
WHERE routine_id = $1 AND idempotency_scope = 'webhook:' || $2::uuid AND idempotency_key = $3;

-- existing_signature --
-- The run an earlier delivery carrying this signature under another delivery id created (a
-- signature makes one run); the key condition lets routine_runs_signature (partial) answer.
SELECT id FROM routine_runs
WHERE trigger_id = $1 AND delivery_signature = $2 AND delivery_key IS DISTINCT FROM 'sig:' || delivery_signature;
