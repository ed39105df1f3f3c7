"""Tokens and principals shared by the CLI and the API."""

from __future__ import annotations

import asyncpg

from shared.crypto import hash_token, new_token


async def create_instance_admin_token(dsn: str, name: str) -> str:
    """Insert an instance-admin token; return the plaintext (it is stored only hashed)."""
    token = new_token("instance_admin")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO api_tokens (token_hash, kind, name) VALUES ($1, 'instance_admin', $2)",
            hash_token(token),
            name,
        )
    finally:
        await conn.close()
    return token
