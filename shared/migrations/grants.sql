-- Repeatable: applied by `routines migrate` after the numbered migrations, on every run, so
-- every table (also those of later migrations) gets its grants. See 0006_roles.sql for the roles.
-- role → table → privileges. The API gets DML on every table (it is the CRUD surface) except
-- schema_migrations; the other services get only what their queries need. A table not listed in
-- `known` gets SELECT/INSERT/UPDATE/DELETE for every service role until it is listed here.
CREATE OR REPLACE FUNCTION routines_apply_grants() RETURNS void
LANGUAGE plpgsql AS $grants$
DECLARE
    -- role → table → privileges. Tables not named here: see the comment at the top.
    known text[] := ARRAY['companies', 'agents', 'board_memberships', 'api_tokens', 'projects', 'goals',
                          'routines', 'issues', 'routine_triggers', 'webhook_secrets', 'routine_runs',
                          'schema_migrations', 'routine_revisions', 'routine_activity', 'console_sessions',
                          'received_batches'];
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
        -- failure alerts: auto-pause parks the routine's schedule triggers and logs activity
        ['routines_dispatcher', 'routine_triggers',  'SELECT, UPDATE'],
        ['routines_dispatcher', 'routine_activity',  'SELECT, INSERT'],
        ['routines_dispatcher', 'routine_revisions', 'SELECT, INSERT'],
        ['routines_dispatcher', 'routine_runs',      'SELECT, UPDATE'],
        -- the sweeper and the runs-received gauge (batches are written by 0010's trigger, as owner);
        -- UPDATE of one column only for the row locks of its skip-locked deletes (FOR UPDATE needs it)
        ['routines_dispatcher', 'received_batches',  'SELECT, DELETE, UPDATE (run_count)'],
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
            -- received_batches: written by 0010's trigger only, read and deleted by the sweeper
            ELSIF r = 'routines_api' AND t NOT IN ('schema_migrations', 'received_batches') THEN
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

SELECT routines_apply_grants();
