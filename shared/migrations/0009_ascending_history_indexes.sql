-- routines:online
-- The history indexes were declared DESC. Rows arrive in time order, so each was inserted at the
-- left of its key's range, and every page split left half a page empty: about twice the size of
-- an ascending index of the same rows (docs/benchmarks.md §8). A backward scan of an ascending
-- index serves the same ORDER BY … DESC.
--
-- Rebuilt without blocking writes: built CONCURRENTLY under a new name, the old one dropped
-- CONCURRENTLY, the new one renamed (a rename takes only a SHARE UPDATE EXCLUSIVE lock). Run
-- outside a transaction, statement by statement; interrupted anywhere, it runs again from the top:
-- a new index built already is kept, a half-built one is built again (shared/migrate.py), and
-- each table keeps a history index throughout.

CREATE INDEX CONCURRENTLY routine_runs_history_asc ON routine_runs (routine_id, triggered_at);
DROP INDEX CONCURRENTLY IF EXISTS routine_runs_history;
ALTER INDEX routine_runs_history_asc RENAME TO routine_runs_history;

CREATE INDEX CONCURRENTLY routine_runs_trigger_history_asc ON routine_runs (trigger_id, triggered_at)
    WHERE trigger_id IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS routine_runs_trigger_history;
ALTER INDEX routine_runs_trigger_history_asc RENAME TO routine_runs_trigger_history;

CREATE INDEX CONCURRENTLY issues_company_asc ON issues (company_id, created_at);
DROP INDEX CONCURRENTLY IF EXISTS issues_company;
ALTER INDEX issues_company_asc RENAME TO issues_company;

CREATE INDEX CONCURRENTLY issues_assignee_asc ON issues (assignee_agent_id, created_at);
DROP INDEX CONCURRENTLY IF EXISTS issues_assignee;
ALTER INDEX issues_assignee_asc RENAME TO issues_assignee;
