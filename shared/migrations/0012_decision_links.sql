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
--
-- A deleter that waited for a decision's lock sees the links it committed only with a snapshot
-- taken after it: under READ COMMITTED, each statement of the trigger takes one. Under REPEATABLE
-- READ or SERIALIZABLE the trigger could not see them, so it refuses (40001, as the keys'
-- own cross-check did when it met rows its snapshot could not see): delete issues and runs under
-- READ COMMITTED. TRUNCATE of the runs, which the key from issues used to refuse, is refused
-- while issues still name runs (truncate issues in the same statement).
ALTER TABLE routine_runs
    DROP CONSTRAINT routine_runs_linked_issue_id_fkey,
    DROP CONSTRAINT routine_runs_coalesced_into_run_id_fkey;
ALTER TABLE issues DROP CONSTRAINT issues_origin_run_fk;

-- SECURITY DEFINER, pinned to this schema, callable by nobody but the triggers: as 0010's.
CREATE FUNCTION routines_unlink_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $unlink$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM deleted) THEN
        RETURN NULL;  -- a statement that deleted nothing (a cascade fires one per referenced row)
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = format('delete from %s under READ COMMITTED: links committed by decisions meanwhile '
                             'would not be seen', TG_TABLE_NAME),
            HINT = 'migration 0012';
    END IF;
    IF TG_TABLE_NAME = 'issues' THEN
        UPDATE routine_runs SET linked_issue_id = NULL WHERE linked_issue_id IN (SELECT id FROM deleted);
    ELSE
        UPDATE issues SET origin_run_id = NULL WHERE origin_run_id IN (SELECT id FROM deleted);
        UPDATE routine_runs SET coalesced_into_run_id = NULL
        WHERE coalesced_into_run_id IN (SELECT id FROM deleted);
    END IF;
    RETURN NULL;
END
$unlink$;

DO $pin$
BEGIN
    EXECUTE format('ALTER FUNCTION routines_unlink_deleted() SET search_path = %I, pg_temp', current_schema());
END
$pin$;
REVOKE EXECUTE ON FUNCTION routines_unlink_deleted() FROM PUBLIC;

CREATE TRIGGER issues_unlink_deleted
    AFTER DELETE ON issues
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION routines_unlink_deleted();

CREATE TRIGGER routine_runs_unlink_deleted
    AFTER DELETE ON routine_runs
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION routines_unlink_deleted();

-- TRUNCATE routine_runs alone would leave issues naming runs that are gone. AFTER: the tables a
-- TRUNCATE names are all empty by then, so truncating issues in the same statement is allowed.
CREATE FUNCTION routines_refuse_truncating_runs() RETURNS trigger
LANGUAGE plpgsql AS $refuse$
BEGIN
    IF EXISTS (SELECT 1 FROM issues WHERE origin_run_id IS NOT NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = 'issues name the runs being truncated: truncate issues in the same statement',
            HINT = 'migration 0012';
    END IF;
    RETURN NULL;
END
$refuse$;
REVOKE EXECUTE ON FUNCTION routines_refuse_truncating_runs() FROM PUBLIC;

CREATE TRIGGER routine_runs_refuse_truncate
    AFTER TRUNCATE ON routine_runs
    FOR EACH STATEMENT EXECUTE FUNCTION routines_refuse_truncating_runs();
