-- The rows an issue names — its company, project, goal, parent issue and assignee — were checked
-- by foreign keys, row by row: a query of its own for each key of each new issue. A decision that
-- creates 500 issues for one routine looked up and locked the same company, project and agent
-- 1,500 times: checked once per statement instead, an always_enqueue decision's Postgres CPU
-- went from 40–42 to 22 µs a run, and on one busy routine that was the largest share of what
-- decisions cost ingest (docs/benchmarks.md §8). Now each statement that inserts issues checks
-- its distinct keys once.
--
-- The guarantees of the keys, kept by triggers (tests/integration/test_issue_references.py):
-- * An issue names only rows that exist. Each distinct key an INSERT writes (and each key an
--   UPDATE changes) is locked FOR KEY SHARE, as a key's check locks it: a delete of that row
--   waits for the transaction and then sees the issue; a row being deleted makes the insert wait,
--   then fail (under REPEATABLE READ, fail to serialise, as a key's check does).
-- * Deleting a company deletes its issues (ON DELETE CASCADE). Deleting a project, goal, agent or
--   issue that an issue names is refused (NO ACTION), and so is changing its id, and truncating
--   its table while issues name its rows (truncate issues in the same statement).
-- * The errors are the keys' own: SQLSTATE 23503, the constraint's name, the key in DETAIL.
-- As in 0012, a delete is refused under REPEATABLE READ and SERIALIZABLE: the trigger could not see
-- an issue committed after the deleter's snapshot (the keys' own cross-check refused such a delete
-- when it met one). Nothing in the services deletes companies, projects, goals, agents or issues.
--
-- A company's issues are deleted by a statement trigger on companies, which fires after the keys'
-- own cascades (row triggers): by then the companies' routines are gone, so their issues can go
-- without a routine naming one as its parent issue; the checks of their agents, projects and
-- goals, deferred to the end of the statement as a cascade's are, find no issue left. TRUNCATE,
-- like DELETE, is refused under REPEATABLE READ and SERIALIZABLE (0012's of runs too, now).
ALTER TABLE issues
    DROP CONSTRAINT issues_company_id_fkey,
    DROP CONSTRAINT issues_project_id_fkey,
    DROP CONSTRAINT issues_goal_id_fkey,
    DROP CONSTRAINT issues_parent_issue_id_fkey,
    DROP CONSTRAINT issues_assignee_agent_id_fkey;

-- The keys named, missing one raised as the foreign key raised it.
CREATE FUNCTION routines_issue_keys_exist(
    companies_ uuid[], projects_ uuid[], goals_ uuid[], parents_ uuid[], agents_ uuid[]
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $exist$
DECLARE
    missing uuid;
    constraint_ text;
    column_ text;
    table_ text;
BEGIN
    -- Locked in a fixed order (companies first), as each key's check would have locked them.
    IF cardinality(companies_) > 0 AND cardinality(companies_) > (SELECT count(*) FROM (SELECT 1 FROM companies WHERE id = ANY (companies_) FOR KEY SHARE) l) THEN
        SELECT k INTO missing FROM unnest(companies_) k WHERE NOT EXISTS (SELECT 1 FROM companies WHERE id = k);
        constraint_ := 'issues_company_id_fkey'; column_ := 'company_id'; table_ := 'companies';
    ELSIF cardinality(projects_) > 0 AND cardinality(projects_) > (SELECT count(*) FROM (SELECT 1 FROM projects WHERE id = ANY (projects_) FOR KEY SHARE) l) THEN
        SELECT k INTO missing FROM unnest(projects_) k WHERE NOT EXISTS (SELECT 1 FROM projects WHERE id = k);
        constraint_ := 'issues_project_id_fkey'; column_ := 'project_id'; table_ := 'projects';
    ELSIF cardinality(goals_) > 0 AND cardinality(goals_) > (SELECT count(*) FROM (SELECT 1 FROM goals WHERE id = ANY (goals_) FOR KEY SHARE) l) THEN
        SELECT k INTO missing FROM unnest(goals_) k WHERE NOT EXISTS (SELECT 1 FROM goals WHERE id = k);
        constraint_ := 'issues_goal_id_fkey'; column_ := 'goal_id'; table_ := 'goals';
    ELSIF cardinality(parents_) > 0 AND cardinality(parents_) > (SELECT count(*) FROM (SELECT 1 FROM issues WHERE id = ANY (parents_) FOR KEY SHARE) l) THEN
        SELECT k INTO missing FROM unnest(parents_) k WHERE NOT EXISTS (SELECT 1 FROM issues WHERE id = k);
        constraint_ := 'issues_parent_issue_id_fkey'; column_ := 'parent_issue_id'; table_ := 'issues';
    ELSIF cardinality(agents_) > 0 AND cardinality(agents_) > (SELECT count(*) FROM (SELECT 1 FROM agents WHERE id = ANY (agents_) FOR KEY SHARE) l) THEN
        SELECT k INTO missing FROM unnest(agents_) k WHERE NOT EXISTS (SELECT 1 FROM agents WHERE id = k);
        constraint_ := 'issues_assignee_agent_id_fkey'; column_ := 'assignee_agent_id'; table_ := 'agents';
    ELSE
        RETURN;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
        MESSAGE = format('insert or update on table "issues" violates foreign key constraint "%s"', constraint_),
        DETAIL = format('Key (%s)=(%s) is not present in table "%s".', column_, missing, table_),
        CONSTRAINT = constraint_, TABLE = 'issues', COLUMN = column_, SCHEMA = current_schema(),
        HINT = 'migration 0013';
END
$exist$;

-- Each distinct key of the statement's new issues, once (NULL names nothing, as with a key).
CREATE FUNCTION routines_check_inserted_issues() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $inserted$
BEGIN
    PERFORM routines_issue_keys_exist(
        ARRAY(SELECT DISTINCT company_id FROM added WHERE company_id IS NOT NULL),
        ARRAY(SELECT DISTINCT project_id FROM added WHERE project_id IS NOT NULL),
        ARRAY(SELECT DISTINCT goal_id FROM added WHERE goal_id IS NOT NULL),
        ARRAY(SELECT DISTINCT parent_issue_id FROM added WHERE parent_issue_id IS NOT NULL),
        ARRAY(SELECT DISTINCT assignee_agent_id FROM added WHERE assignee_agent_id IS NOT NULL));
    RETURN NULL;
END
$inserted$;

-- The keys an UPDATE changed (the trigger's WHEN: only then, as a key checks only a changed key).
CREATE FUNCTION routines_check_updated_issue() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $updated$
BEGIN
    PERFORM routines_issue_keys_exist(
        ARRAY(SELECT NEW.company_id WHERE NEW.company_id IS DISTINCT FROM OLD.company_id AND NEW.company_id IS NOT NULL),
        ARRAY(SELECT NEW.project_id WHERE NEW.project_id IS DISTINCT FROM OLD.project_id AND NEW.project_id IS NOT NULL),
        ARRAY(SELECT NEW.goal_id WHERE NEW.goal_id IS DISTINCT FROM OLD.goal_id AND NEW.goal_id IS NOT NULL),
        ARRAY(SELECT NEW.parent_issue_id
              WHERE NEW.parent_issue_id IS DISTINCT FROM OLD.parent_issue_id AND NEW.parent_issue_id IS NOT NULL),
        ARRAY(SELECT NEW.assignee_agent_id
              WHERE NEW.assignee_agent_id IS DISTINCT FROM OLD.assignee_agent_id AND NEW.assignee_agent_id IS NOT NULL));
    RETURN NULL;
END
$updated$;

CREATE TRIGGER issues_check_inserted
    AFTER INSERT ON issues
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION routines_check_inserted_issues();

CREATE TRIGGER issues_check_updated
    AFTER UPDATE OF company_id, project_id, goal_id, parent_issue_id, assignee_agent_id ON issues
    FOR EACH ROW
    WHEN (OLD.company_id IS DISTINCT FROM NEW.company_id OR OLD.project_id IS DISTINCT FROM NEW.project_id
          OR OLD.goal_id IS DISTINCT FROM NEW.goal_id OR OLD.parent_issue_id IS DISTINCT FROM NEW.parent_issue_id
          OR OLD.assignee_agent_id IS DISTINCT FROM NEW.assignee_agent_id)
    EXECUTE FUNCTION routines_check_updated_issue();

-- A row an issue names, deleted (or its id changed): refused while an issue names it; a company's
-- issues deleted with it. A row trigger per referenced table, as the keys had (TG_ARGV: the
-- issues' column, and the constraint that stood for it).
CREATE FUNCTION routines_issue_key_removed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $removed$
DECLARE
    column_ text := TG_ARGV[0];
    constraint_ text := TG_ARGV[1];
    named boolean;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id IS NOT DISTINCT FROM OLD.id THEN
        RETURN NULL;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = format('delete from %s under READ COMMITTED: issues committed meanwhile would not be seen',
                             TG_TABLE_NAME),
            HINT = 'migration 0013';
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM issues WHERE %I = $1)', column_) INTO named USING OLD.id;
    IF named THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
            MESSAGE = format('update or delete on table "%s" violates foreign key constraint "%s" on table "issues"',
                             TG_TABLE_NAME, constraint_),
            DETAIL = format('Key (id)=(%s) is still referenced from table "issues".', OLD.id),
            CONSTRAINT = constraint_, TABLE = 'issues', SCHEMA = current_schema(), HINT = 'migration 0013';
    END IF;
    RETURN NULL;
END
$removed$;

CREATE TRIGGER issues_of_company_renumbered AFTER UPDATE OF id ON companies
    FOR EACH ROW EXECUTE FUNCTION routines_issue_key_removed('company_id', 'issues_company_id_fkey');
CREATE TRIGGER issues_of_project_removed AFTER DELETE OR UPDATE OF id ON projects
    FOR EACH ROW EXECUTE FUNCTION routines_issue_key_removed('project_id', 'issues_project_id_fkey');
CREATE TRIGGER issues_of_goal_removed AFTER DELETE OR UPDATE OF id ON goals
    FOR EACH ROW EXECUTE FUNCTION routines_issue_key_removed('goal_id', 'issues_goal_id_fkey');
CREATE TRIGGER issues_of_agent_removed AFTER DELETE OR UPDATE OF id ON agents
    FOR EACH ROW EXECUTE FUNCTION routines_issue_key_removed('assignee_agent_id', 'issues_assignee_agent_id_fkey');

-- A company's issues go with it: those of every company the statement deleted, in one statement,
-- so that issues and routines naming each other across those companies go together (the parents'
-- check below runs once all of them are gone, as the keys' checks ran after all their cascades).
CREATE FUNCTION routines_delete_issues_of_companies() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $companies$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM gone) THEN
        RETURN NULL;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = 'delete from companies under READ COMMITTED: issues committed meanwhile would not be seen',
            HINT = 'migration 0013';
    END IF;
    DELETE FROM issues WHERE company_id IN (SELECT id FROM gone);
    RETURN NULL;
END
$companies$;

CREATE TRIGGER issues_of_companies_deleted
    AFTER DELETE ON companies
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION routines_delete_issues_of_companies();

-- Parent issues: once per statement (a company's thousands of issues deleted together would
-- otherwise look for children once per issue, in a table with no index on the parent).
CREATE FUNCTION routines_parent_issues_removed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $parents$
DECLARE
    orphan record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM gone) THEN
        RETURN NULL;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = 'delete from issues under READ COMMITTED: issues committed meanwhile would not be seen',
            HINT = 'migration 0013';
    END IF;
    SELECT g.id INTO orphan FROM issues i JOIN gone g ON i.parent_issue_id = g.id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
            MESSAGE = 'update or delete on table "issues" violates foreign key constraint "issues_parent_issue_id_fkey" on table "issues"',
            DETAIL = format('Key (id)=(%s) is still referenced from table "issues".', orphan.id),
            CONSTRAINT = 'issues_parent_issue_id_fkey', TABLE = 'issues', SCHEMA = current_schema(),
            HINT = 'migration 0013';
    END IF;
    RETURN NULL;
END
$parents$;

CREATE TRIGGER issues_parent_deleted
    AFTER DELETE ON issues
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION routines_parent_issues_removed();
CREATE TRIGGER issues_parent_renumbered AFTER UPDATE OF id ON issues
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION routines_issue_key_removed('parent_issue_id', 'issues_parent_issue_id_fkey');

-- TRUNCATE of a table issues name, while issues still name its rows (after it, they name nothing).
CREATE FUNCTION routines_refuse_truncating_issue_keys() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $truncate$
DECLARE
    named boolean;
BEGIN
    -- Under a transaction's snapshot, issues committed after it would not be seen (TRUNCATE itself
    -- is not bound by snapshots: the rows they name would be gone all the same).
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = format('truncate %s under READ COMMITTED: issues committed meanwhile would not be seen',
                             TG_TABLE_NAME),
            HINT = 'migration 0013';
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM issues WHERE %I IS NOT NULL)', TG_ARGV[0]) INTO named;
    IF named THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = format('issues name rows of %s: truncate issues in the same statement', TG_TABLE_NAME),
            HINT = 'migration 0013';
    END IF;
    RETURN NULL;
END
$truncate$;

CREATE TRIGGER issues_of_companies_truncated AFTER TRUNCATE ON companies
    FOR EACH STATEMENT EXECUTE FUNCTION routines_refuse_truncating_issue_keys('company_id');
CREATE TRIGGER issues_of_projects_truncated AFTER TRUNCATE ON projects
    FOR EACH STATEMENT EXECUTE FUNCTION routines_refuse_truncating_issue_keys('project_id');
CREATE TRIGGER issues_of_goals_truncated AFTER TRUNCATE ON goals
    FOR EACH STATEMENT EXECUTE FUNCTION routines_refuse_truncating_issue_keys('goal_id');
CREATE TRIGGER issues_of_agents_truncated AFTER TRUNCATE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION routines_refuse_truncating_issue_keys('assignee_agent_id');

-- 0012's refusal to truncate runs that issues name had the same blind spot: it too refuses under
-- a transaction's snapshot now.
CREATE OR REPLACE FUNCTION routines_refuse_truncating_runs() RETURNS trigger
LANGUAGE plpgsql AS $refuse$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
            MESSAGE = 'truncate routine_runs under READ COMMITTED: issues committed meanwhile would not be seen',
            HINT = 'migration 0013';
    END IF;
    IF EXISTS (SELECT 1 FROM issues WHERE origin_run_id IS NOT NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
            MESSAGE = 'issues name the runs being truncated: truncate issues in the same statement',
            HINT = 'migration 0012';
    END IF;
    RETURN NULL;
END
$refuse$;

-- SECURITY DEFINER (they read and lock tables a service role may not), pinned to this schema and
-- callable by nobody but the triggers: as 0010's and 0012's.
DO $pin$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['routines_issue_keys_exist(uuid[], uuid[], uuid[], uuid[], uuid[])',
                             'routines_check_inserted_issues()', 'routines_check_updated_issue()',
                             'routines_issue_key_removed()', 'routines_delete_issues_of_companies()',
                             'routines_parent_issues_removed()',
                             'routines_refuse_truncating_issue_keys()'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$pin$;
