-- Least-privilege service roles (docs/operations.md "Database roles").
--
-- The role that runs `routines migrate` (the migration role) owns the schema and every table.
-- Each service connects as its own role, which gets only what its queries need:
--   routines_api         the REST API: reads and writes the directory and routines (all tables),
--                        reads schema_migrations
--   routines_gateway     reads triggers, routines, secrets and runs; records runs
--   routines_scheduler   reads routines; claims and advances schedule triggers; records runs
--   routines_dispatcher  decides runs: reads/updates runs and routines, creates/updates issues
-- Foreign-key checks run with the table owner's rights, so no grants on referenced tables are
-- needed for them.
--
-- The roles are created NOLOGIN here when the migration role may create roles; an operator
-- (or CloudNativePG `managed.roles`) makes them LOGIN with a password, or grants them to login
-- roles. Without the right to create roles this migration only grants to roles that exist.
--
-- Robust to tables added by later migrations: the grants live in the function
-- routines_apply_grants(), which `routines migrate` calls after every run. A table it does not
-- name explicitly gets SELECT/INSERT/UPDATE/DELETE for every service role (so a new feature works
-- at once); a later migration narrows that by redefining the function's lists.

DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['routines_api', 'routines_gateway', 'routines_scheduler', 'routines_dispatcher']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot create role % (no CREATEROLE); create it and run migrate again', r;
            END;
        END IF;
    END LOOP;
END
$roles$;

CREATE OR REPLACE FUNCTION routines_apply_grants() RETURNS void
LANGUAGE plpgsql AS $grants$
DECLARE
    -- role → table → privileges. Tables not named here: see the comment at the top.
    known text[] := ARRAY['companies', 'agents', 'board_memberships', 'api_tokens', 'projects', 'goals',
                          'routines', 'issues', 'routine_triggers', 'webhook_secrets', 'routine_runs',
                          'schema_migrations'];
    grants text[][] := ARRAY[
        ['routines_gateway',    'routine_triggers',  'SELECT'],
        ['routines_gateway',    'routines',          'SELECT'],
        ['routines_gateway',    'webhook_secrets',   'SELECT'],
        ['routines_gateway',    'routine_runs',      'SELECT, INSERT'],
        ['routines_gateway',    'schema_migrations', 'SELECT'],
        ['routines_scheduler',  'routine_triggers',  'SELECT, UPDATE'],
        ['routines_scheduler',  'routines',          'SELECT'],
        ['routines_scheduler',  'routine_runs',      'SELECT, INSERT'],
        ['routines_scheduler',  'schema_migrations', 'SELECT'],
        ['routines_dispatcher', 'routines',          'SELECT, UPDATE'],
        ['routines_dispatcher', 'routine_runs',      'SELECT, UPDATE'],
        ['routines_dispatcher', 'issues',            'SELECT, INSERT, UPDATE'],
        ['routines_dispatcher', 'schema_migrations', 'SELECT'],
        ['routines_api',        'schema_migrations', 'SELECT']
    ];
    roles text[] := ARRAY['routines_api', 'routines_gateway', 'routines_scheduler', 'routines_dispatcher'];
    r text;
    t text;
    i int;
BEGIN
    FOREACH r IN ARRAY roles LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), r);
        FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() LOOP
            EXECUTE format('REVOKE ALL ON TABLE %I FROM %I', t, r);
            IF NOT t = ANY(known) THEN
                EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %I TO %I', t, r);
            ELSIF r = 'routines_api' AND t <> 'schema_migrations' THEN
                EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %I TO %I', t, r);
            END IF;
        END LOOP;
    END LOOP;
    FOR i IN 1 .. array_length(grants, 1) LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = grants[i][1]);
        CONTINUE WHEN to_regclass(format('%I.%I', current_schema(), grants[i][2])) IS NULL;
        EXECUTE format('GRANT %s ON TABLE %I TO %I', grants[i][3], grants[i][2], grants[i][1]);
    END LOOP;
    -- Sequences of later tables (identity/serial columns) follow their tables.
    FOREACH r IN ARRAY roles LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), r);
    END LOOP;
END
$grants$;

-- Session timeouts as role defaults: they hold through a transaction-mode pooler, which cannot
-- pass startup parameters (ROUTINES_DB_POOLER_MODE=transaction). Values match the defaults of
-- ROUTINES_DB_*_TIMEOUT_MS; change them with ALTER ROLE (docs/operations.md).
DO $timeouts$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['routines_api', 'routines_gateway', 'routines_scheduler', 'routines_dispatcher']
    LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
        BEGIN
            EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', r, '15s');
            EXECUTE format('ALTER ROLE %I SET lock_timeout = %L', r, '5s');
            EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', r, '30s');
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot set timeouts on role % (no privilege); set them as in docs/operations.md', r;
        END;
    END LOOP;
END
$timeouts$;

SELECT routines_apply_grants();
