"""The named queries of the routine features (issue 16), loaded once."""

from __future__ import annotations

from shared.db import load_queries

FEATURE_QUERIES = load_queries("routines_api", "features.sql")
