-- insert_session --
-- A console session for a board or instance-admin token.
INSERT INTO console_sessions (id_hash, token_id, csrf_token, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4));

-- session_principal --
-- Who a live session belongs to: the session's token must itself still be valid.
SELECT s.csrf_token, t.id AS token_id, t.kind, t.agent_id, NULL::text AS agent_status,
       b.company_id
FROM console_sessions s
JOIN api_tokens t ON t.id = s.token_id AND t.revoked_at IS NULL
LEFT JOIN board_memberships b ON b.id = t.board_membership_id
WHERE s.id_hash = $1 AND s.expires_at > now() AND t.kind IN ('board', 'instance_admin');

-- delete_session --
-- Sign-out: the session is gone for good.
DELETE FROM console_sessions WHERE id_hash = $1;

-- delete_expired_sessions --
-- Forget sessions past their expiry.
DELETE FROM console_sessions WHERE expires_at <= now();
