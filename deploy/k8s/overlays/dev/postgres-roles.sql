-- Development database roles: the owner `routines` (POSTGRES_USER) runs the migrations; each
-- service logs in as its own role, which migration 0006 grants exactly what it needs.
CREATE ROLE routines_api LOGIN PASSWORD 'dev-api';
CREATE ROLE routines_gateway LOGIN PASSWORD 'dev-gateway';
CREATE ROLE routines_scheduler LOGIN PASSWORD 'dev-scheduler';
CREATE ROLE routines_dispatcher LOGIN PASSWORD 'dev-dispatcher';
