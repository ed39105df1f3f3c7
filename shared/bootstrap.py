"""The first credential: an instance-admin token, made by `routines bootstrap` and
`routines dev` before any API call is possible."""

from __future__ import annotations

import asyncpg

from shared.crypto import hash_token, new_token
from shared.sql import BOOTSTRAP_QUERIES


async def create_instance_admin_token(dsn: str, name: str) -> str:
    """Insert an instance-admin token; return the plaintext (it is stored only hashed)."""
    token = new_token("instance_admin")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(BOOTSTRAP_QUERIES["insert_instance_admin_token"], hash_token(token), name)
    finally:
        await conn.close()
    return token
