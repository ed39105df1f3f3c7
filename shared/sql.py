"""The platform's named queries (`queries.sql`: runs; `alerts.sql`: failure alerts), loaded once;
every module of `shared` takes its SQL from here."""

from __future__ import annotations

from shared.db import load_queries

QUERIES = load_queries("shared", "queries.sql", "alerts.sql")
