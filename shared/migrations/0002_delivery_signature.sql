-- The signature a webhook delivery carried, so a byte-for-byte replay (409) can be told apart
-- from a sender's re-signed retry of the same delivery id (200 with the original run).
ALTER TABLE routine_runs ADD COLUMN delivery_signature text CHECK (length(delivery_signature) <= 2000);
