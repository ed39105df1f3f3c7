-- Secret rotations are rate-limited per trigger: the times of its recent rotations.
ALTER TABLE routine_triggers ADD COLUMN secret_rotated_at timestamptz[] NOT NULL DEFAULT '{}';

-- A webhook signature makes at most one run per trigger. github_hmac signs no timestamp and no
-- delivery id, so without this a captured delivery re-sent under a new X-GitHub-Delivery would
-- make a new run every time. (hmac_sha256 and standard_webhooks sign a timestamp or the id, so
-- their signatures never repeat legitimately either.) Runs that replays made before keep their
-- data but lose the duplicate signature.
UPDATE routine_runs r SET delivery_signature = NULL
WHERE delivery_signature IS NOT NULL AND EXISTS (
    SELECT 1 FROM routine_runs o
    WHERE o.trigger_id = r.trigger_id AND o.delivery_signature = r.delivery_signature
      AND (o.triggered_at, o.id) < (r.triggered_at, r.id)
);
CREATE UNIQUE INDEX routine_runs_signature ON routine_runs (trigger_id, delivery_signature)
    WHERE delivery_signature IS NOT NULL;
