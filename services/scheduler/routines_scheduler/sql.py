"""The scheduler's named queries (`queries.sql`), loaded once; every module of the package takes its SQL
from here."""

from __future__ import annotations

from shared.db import load_queries

QUERIES = load_queries("routines_scheduler")
