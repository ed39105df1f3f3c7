-- Coalesced fires are recorded on the active issue as references (run id, source, time, payload
-- size), not as copies of their payloads (which made issue lists grow by megabytes). Rewrite the
-- copies already stored; the payloads stay on their runs.
UPDATE issues
SET coalesced_fires = (
    SELECT COALESCE(jsonb_agg(
               (f.e - 'payload') || jsonb_build_object('payloadBytes', octet_length((f.e -> 'payload')::text))
               ORDER BY f.n), '[]'::jsonb)
    FROM jsonb_array_elements(coalesced_fires) WITH ORDINALITY AS f(e, n))
WHERE jsonb_path_exists(coalesced_fires, '$[*].payload');
