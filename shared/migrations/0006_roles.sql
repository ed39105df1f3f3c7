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
-- Robust to tables added by later migrations: the grants live in the repeatable file
-- shared/migrations/grants.sql (function routines_apply_grants()), which `routines migrate`
-- applies after the numbered migrations on every run. A table it does not name explicitly gets
-- SELECT/INSERT/UPDATE/DELETE for every service role (so a new feature works at once); narrow
-- that by adding the table to the lists there.

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

-- The grants themselves: shared/migrations/grants.sql, applied after every `routines migrate`.

-- Session timeouts as database and role defaults: they hold through a transaction-mode pooler,
-- which cannot pass startup parameters (ROUTINES_DB_POOLER_MODE=transaction). Values match the
-- defaults of ROUTINES_DB_*_TIMEOUT_MS; change them with ALTER ROLE / ALTER DATABASE
-- (docs/operations.md). The database default needs only ownership of the database (the
-- migration role usually has it, e.g. CloudNativePG's `owner`); the role defaults need
-- CREATEROLE, and are skipped with a notice without it. `routines migrate` itself runs
-- without a statement timeout.
DO $timeouts$
DECLARE
    r text;
BEGIN
    BEGIN
        EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', current_database(), '15s');
        EXECUTE format('ALTER DATABASE %I SET lock_timeout = %L', current_database(), '5s');
        EXECUTE format('ALTER DATABASE %I SET idle_in_transaction_session_timeout = %L', current_database(), '30s');
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'cannot set database timeouts (not the database owner); set them as in docs/operations.md';
    END;
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

