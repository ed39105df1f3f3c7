"""The API's named queries, loaded once: `queries.sql` (the core objects) and `features.sql` (the
routine features). Every module of the package takes its SQL from here, and from nowhere else."""

from __future__ import annotations

from shared.db import load_queries

FILES = ("queries.sql", "features.sql")


def _load() -> dict[str, str]:
    queries: dict[str, str] = {}
    for filename in FILES:
        loaded = load_queries("routines_api", filename)
        clash = queries.keys() & loaded.keys()
        if clash:
            raise ValueError(f"query names defined twice in routines_api: {sorted(clash)}")
        queries.update(loaded)
    return queries


QUERIES = _load()
