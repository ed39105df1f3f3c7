"""The API's named queries, loaded once: `queries.sql` (the core objects) and `features.sql` (the
routine features). Every module of the package takes its SQL from here, and from nowhere else."""

from __future__ import annotations

from shared.db import load_queries

QUERIES = load_queries("routines_api", "queries.sql", "features.sql")
