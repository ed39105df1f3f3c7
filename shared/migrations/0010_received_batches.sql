-- Undecided runs are found through the batches that recorded them, not through an index on
-- routine_runs.status. While an index (routine_runs_received) named the status, no decision could
-- be a HOT update: each decided run wrote a new entry into every index of the table. Decisions are
-- the dispatcher's hot path (docs/benchmarks.md §8); without that index a decision rewrites the
-- run in its own page and touches no index at all.
--
-- Every statement that inserts runs adds one row here naming the runs it recorded still
-- `received`. The database does it (a statement trigger), so no writer can forget, whatever its
-- version. Only the sweeper deletes a batch, once it has seen every run of the batch decided: so
-- a run that is still `received` is always named by a batch, and the sweeper — the last resort
-- for a run whose announcement was lost, design §4 — reads this small table instead of the runs.
CREATE TABLE received_batches (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    run_ids      uuid[] NOT NULL,
    run_count    int NOT NULL  -- cardinality(run_ids), without reading the array
);
CREATE INDEX received_batches_recorded ON received_batches (recorded_at, id);

-- SECURITY DEFINER: it writes as the owner of the schema, so a role that may insert runs needs
-- no privilege on received_batches (none has one the moment this commits: grants.sql runs after
-- the last migration). Its search path is this schema, then pg_temp: a temporary table of the
-- same name made by a service role cannot stand in for received_batches. Nobody may call it but
-- the trigger (EXECUTE is checked when a trigger is created, not when it fires).
CREATE FUNCTION routines_note_received_runs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $note$
BEGIN
    INSERT INTO received_batches (run_ids, run_count)
    SELECT array_agg(id), count(*) FROM recorded WHERE status = 'received' HAVING count(*) > 0;
    RETURN NULL;
END
$note$;
DO $pin$
BEGIN
    EXECUTE format('ALTER FUNCTION routines_note_received_runs() SET search_path = %I, pg_temp',
                   current_schema());
END
$pin$;
REVOKE EXECUTE ON FUNCTION routines_note_received_runs() FROM PUBLIC;

-- CREATE TRIGGER waits for every transaction inserting runs to end and holds new ones off until
-- this migration commits: the runs already recorded are all in the backfill below, and every
-- later one goes through the trigger.
CREATE TRIGGER routine_runs_received_batch
    AFTER INSERT ON routine_runs
    REFERENCING NEW TABLE AS recorded
    FOR EACH STATEMENT EXECUTE FUNCTION routines_note_received_runs();

-- The runs undecided now, a thousand a batch (a backlog must not become one huge array).
INSERT INTO received_batches (run_ids, run_count)
SELECT array_agg(id ORDER BY triggered_at), count(*)
FROM (SELECT id, triggered_at, (row_number() OVER (ORDER BY triggered_at) - 1) / 1000 AS n
      FROM routine_runs WHERE status = 'received') AS undecided
GROUP BY n;

-- A HOT update needs room in the run's own page, and a dispatcher decides the runs of a page
-- together: in one transaction, so no old version can be pruned before all the new ones are
-- written, and a decided run is ~45 bytes larger (its issue, its time; a run of a small payload
-- is ~140 bytes). Pages of new runs are filled to 40 %, the rest left for their decisions
-- (docs/operations.md, "Disk"). Existing pages keep their rows.
ALTER TABLE routine_runs SET (fillfactor = 40);
