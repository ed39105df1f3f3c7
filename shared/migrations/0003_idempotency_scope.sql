-- Secret rotations are rate-limited per trigger: the times of its recent rotations.
ALTER TABLE routine_triggers ADD COLUMN secret_rotated_at timestamptz[] NOT NULL DEFAULT '{}';

-- A webhook signature makes at most one run per trigger. github_hmac signs no timestamp and no
-- delivery id, so without this a captured delivery re-sent under a new X-GitHub-Delivery would
-- make a new run every time. (hmac_sha256 and standard_webhooks sign a timestamp or the id, so
-- their signatures never repeat legitimately either.) Runs that replays made before keep their
-- data but lose the duplicate signature.
UPDATE routine_runs r SET delivery_signature = NULL
WHERE delivery_signature IS NOT NULL AND delivery_key IS DISTINCT FROM 'sig:' || delivery_signature
  AND EXISTS (
    SELECT 1 FROM routine_runs o
    WHERE o.trigger_id = r.trigger_id AND o.delivery_signature = r.delivery_signature
      AND o.delivery_key IS DISTINCT FROM 'sig:' || o.delivery_signature
      AND (o.triggered_at, o.id) < (r.triggered_at, r.id)
);
-- Where the delivery key is the signature itself ('sig:<signature>': every hmac_sha256 delivery,
-- and github_hmac without a delivery id) routine_runs_delivery enforces this already: those rows
-- are left out, so the hot path pays for no second index.
CREATE UNIQUE INDEX routine_runs_signature ON routine_runs (trigger_id, delivery_signature)
    WHERE delivery_signature IS NOT NULL AND delivery_key IS DISTINCT FROM 'sig:' || delivery_signature;

-- Idempotency keys are scoped per routine and source: manual and API runs share the scope
-- 'manual'; each webhook trigger has its own, 'webhook:<trigger id>'. A key is bound to a hash
-- of its run's payload: the same key with another payload is refused (422), not answered with a
-- run made of different input.
ALTER TABLE routine_runs
    ADD COLUMN idempotency_scope text CHECK (length(idempotency_scope) <= 100),
    ADD COLUMN payload_hash bytea,
    ADD CONSTRAINT routine_runs_idempotency_scoped
        CHECK (idempotency_key IS NULL OR idempotency_scope IS NOT NULL) NOT VALID;
UPDATE routine_runs
SET idempotency_scope = CASE WHEN source = 'webhook'
                             THEN 'webhook:' || coalesce(trigger_id, id)::text ELSE 'manual' END,
    payload_hash = sha256(convert_to(payload::text, 'UTF8'))
WHERE idempotency_key IS NOT NULL;
ALTER TABLE routine_runs VALIDATE CONSTRAINT routine_runs_idempotency_scoped;
DROP INDEX routine_runs_idempotency;
CREATE UNIQUE INDEX routine_runs_idempotency ON routine_runs (routine_id, idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
