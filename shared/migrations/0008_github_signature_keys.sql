-- A github_hmac delivery without X-GitHub-Delivery was keyed 'sig:<signature>', which
-- routine_runs_signature leaves out (that form is meant for hmac_sha256, whose deliveries never
-- carry an id): the same signature sent once with an id and once without made two runs. Such
-- deliveries are now keyed 'github-sig:<signature>' and so are in routine_runs_signature; the
-- runs recorded before are re-keyed — except where the signature already made another run
-- (the replay this closes happened; both runs stay, the older key keeps them apart).
UPDATE routine_runs r
SET delivery_key = 'github-sig:' || r.delivery_signature
FROM routine_triggers t
WHERE t.id = r.trigger_id AND t.signing_mode = 'github_hmac'
  AND r.delivery_key = 'sig:' || r.delivery_signature
  AND NOT EXISTS (SELECT 1 FROM routine_runs o
                  WHERE o.trigger_id = r.trigger_id AND o.delivery_signature = r.delivery_signature
                    AND o.id <> r.id);
