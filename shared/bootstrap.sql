-- Run by `routines bootstrap` and `routines dev` with the owner's connection, never by a
-- service: no service role may write credentials of the instance admin.

-- insert_instance_admin_token --
-- The first credential of an instance.
INSERT INTO api_tokens (token_hash, kind, name) VALUES ($1, 'instance_admin', $2);
