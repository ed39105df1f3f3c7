-- The three links a decision writes were foreign keys: a run's issue (routine_runs.linked_issue_id),
-- the run a coalesced or skipped run went into (routine_runs.coalesced_into_run_id), and the run
-- that created an issue (issues.origin_run_id). Postgres checks a foreign key row by row, each
-- check a query of its own: about 3.5 µs a decided run for each link, a sixth of the Postgres time
-- of an always_enqueue decision (docs/benchmarks.md §8). Decisions are the dispatcher's hot path.
--
-- Only a decision writes these links (routines_dispatcher/decide.py), and each points at a row its
-- transaction holds locked until it commits: the runs it decides (FOR UPDATE), the issues it
-- creates, the routine's open issue and that issue's run (FOR KEY SHARE, as a foreign key's check
-- would lock them). So the row a link names exists when the decision commits, and nobody can
-- delete it before; one deleted just before is not found, and is not linked.
--
-- What the keys did on delete stays with the database: statement triggers set the links to
-- deleted issues and runs to NULL, as ON DELETE SET NULL did. Nothing in the services deletes
-- issues or runs (tests/integration/test_migrations.py: rows that get deleted), so, as before,
-- no index serves these updates; an index on a link would also make every decision's update of
-- its run write an index entry (migration 0010).
ALTER TABLE routine_runs
    DROP CONSTRAINT routine_runs_linked_issue_id_fkey,
    DROP CONSTRAINT routine_runs_coalesced_into_run_id_fkey;
ALTER TABLE issues DROP CONSTRAINT issues_origin_run_fk;

-- SECURITY DEFINER, pinned to this schema, callable by nobody but the triggers: as 0010's.
CREATE FUNCTION routines_unlink_deleted_issues() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $unlink$
BEGIN
    UPDATE routine_runs SET linked_issue_id = NULL WHERE linked_issue_id IN (SELECT id FROM deleted);
    RETURN NULL;
END
$unlink$;

CREATE FUNCTION routines_unlink_deleted_runs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $unlink$
BEGIN
    UPDATE issues SET origin_run_id = NULL WHERE origin_run_id IN (SELECT id FROM deleted);
    UPDATE routine_runs SET coalesced_into_run_id = NULL
    WHERE coalesced_into_run_id IN (SELECT id FROM deleted);
    RETURN NULL;
END
$unlink$;

DO $pin$
BEGIN
    EXECUTE format('ALTER FUNCTION routines_unlink_deleted_issues() SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION routines_unlink_deleted_runs() SET search_path = %I, pg_temp',
                   current_schema());
END
$pin$;
REVOKE EXECUTE ON FUNCTION routines_unlink_deleted_issues() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION routines_unlink_deleted_runs() FROM PUBLIC;

CREATE TRIGGER issues_unlink_deleted
    AFTER DELETE ON issues
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION routines_unlink_deleted_issues();

CREATE TRIGGER routine_runs_unlink_deleted
    AFTER DELETE ON routine_runs
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION routines_unlink_deleted_runs();
