-- routines:online
-- Undecided runs are found through received_batches (0010): the index on routine_runs.status goes,
-- and with it the last index a decision changes, so decisions are HOT updates. Dropped
-- CONCURRENTLY, outside a transaction, so that no insert or decision waits for it.
--
-- During a rolling upgrade, a dispatcher of the previous release still sweeps and counts runs by
-- status: without the index, a scan of the table every few seconds until it is replaced.
DROP INDEX CONCURRENTLY IF EXISTS routine_runs_received;
