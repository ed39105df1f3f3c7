"""The platform's named queries (`queries.sql`: runs; `alerts.sql`: failure alerts), loaded once;
every module of `shared` takes its SQL from here. `bootstrap.sql` is apart: it runs as the owner
(`routines bootstrap`), and no service role is granted what it does."""

from __future__ import annotations

from shared.db import load_queries

QUERIES = load_queries("shared", "queries.sql", "alerts.sql")
BOOTSTRAP_QUERIES = load_queries("shared", "bootstrap.sql")
